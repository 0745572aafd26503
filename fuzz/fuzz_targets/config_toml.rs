#![no_main]
//! The TOML config loader never panics on any text; what it accepts is valid and has a
//! `Debug` that does not depend on its secrets; what it refuses is a typed error with a
//! message, a key where the kind implies one, and no secret in it.
use libfuzzer_sys::fuzz_target;
use twinhub::SdkConfig;
use twinhub::config::ErrorKind;
use twinhub::spec::{ProtocolSpec, Secret};

/// The key inside the connection string every `X_env` lookup returns.
const ENV_KEY: &str = "ZnV6ei1lbnYta2V5LTQ3MTE=";

/// Replaces every secret of `config` with the same dummy.
fn without_secrets(mut config: SdkConfig) -> SdkConfig {
    for e in &mut config.endpoints {
        match &mut e.protocol {
            ProtocolSpec::EventHubs(s) => s.key = Secret::new("x"),
            ProtocolSpec::IotHub(s) => s.key = Secret::new("x"),
            ProtocolSpec::Mqtt(s) => {
                if let Some(p) = &mut s.password {
                    *p = Secret::new("x");
                }
            }
            ProtocolSpec::Http(s) => {
                for (_, v) in &mut s.headers {
                    *v = Secret::new("x");
                }
            }
            ProtocolSpec::Kafka(s) => {
                if let Some(a) = &mut s.sasl {
                    a.password = Secret::new("x");
                }
            }
        }
    }
    config
}

fuzz_target!(|text: &str| {
    // `X_file` reads any path (a FIFO or /dev/zero would hang this process, not the
    // loader), and escapes could spell the key; neither is the loader's code to test.
    if text.contains("_file") || text.contains("\\u") || text.contains("\\U") {
        return;
    }
    let env = |_: &str| {
        Some(format!(
            "Endpoint=sb://env.example/;SharedAccessKeyName=send;SharedAccessKey={ENV_KEY};EntityPath=t"
        ))
    };
    let secret_in_text = text.contains(ENV_KEY);
    match SdkConfig::from_toml_str_with_env(text, env) {
        Ok(config) => {
            config.validate().expect("a loaded config is valid");
            config
                .engine_config()
                .expect("a loaded config suits the engine");
            let shown = format!("{config:?}");
            assert_eq!(shown, format!("{:?}", without_secrets(config.clone())));
            assert!(secret_in_text || !shown.contains(ENV_KEY));
        }
        Err(e) => {
            assert!(!e.message.is_empty());
            let shown = e.to_string();
            assert!(secret_in_text || !shown.contains(ENV_KEY), "{shown}");
            assert!(secret_in_text || !format!("{e:?}").contains(ENV_KEY));
            if let Some(line) = e.line {
                assert!(
                    line >= 1 && line <= text.lines().count() + 1,
                    "{line}: {shown}"
                );
            }
            match e.kind {
                // No file is read here.
                ErrorKind::Io => panic!("an I/O error without a file: {shown}"),
                ErrorKind::UnknownKey => {
                    let key = e.key.as_deref().expect("an unknown key is named");
                    let name = shown
                        .split_once("unknown key `")
                        .and_then(|(_, r)| r.split('`').next())
                        .expect("the message names the key");
                    assert!(key.ends_with(name), "{key} / {shown}");
                }
                ErrorKind::Missing | ErrorKind::Secret | ErrorKind::Engine => {
                    assert!(e.key.is_some(), "{shown}");
                }
                _ => {}
            }
        }
    }
});
