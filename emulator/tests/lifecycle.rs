//! Starting from a TOML config, the JSONL file, and shutting down.

mod common;

use common::*;
use twinhub_emulator::{Emulator, EmulatorConfig, Tier};

#[tokio::test]
async fn toml_config_jsonl_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("p.jsonl");
    let config = EmulatorConfig::from_toml_str(&format!(
        "[[region]]\nname = \"p\"\ntier = \"basic\"\nkey_name = \"writer\"\nkey = \"fixed\"\nevent_hubs = [\"hub-a\"]\njsonl = {:?}\n",
        jsonl.display().to_string()
    ))
    .unwrap();
    assert_eq!(config.regions[0].tier, Tier::Basic);
    let emu = Emulator::start(config).await.unwrap();
    let r = &emu["p"];
    assert_eq!(
        (r.key(), r.key_name(), r.event_hub()),
        ("fixed", "writer", "hub-a")
    );
    assert_eq!(r.max_publication_bytes(), 256 * 1024);
    assert!(
        r.event_hubs_connection_string()
            .contains(";SharedAccessKeyName=writer;SharedAccessKey=fixed;EntityPath=hub-a;")
    );
    assert!(!format!("{r:?}").contains("fixed"), "Debug hides the key");
    assert_eq!(
        send_batch(
            &client(),
            r,
            r#"[{"Body":"j","UserProperties":{"message-id":"j:1"}}]"#
        )
        .await
        .unwrap(),
        201
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["message_id"], "j:1");
    assert_eq!(lines[0]["region"], "p");

    let (http, mqtt, admin) = (r.http_addr(), r.mqtt_addr(), emu.admin_addr());
    emu.shutdown().await;
    for addr in [http, mqtt, admin] {
        let closed = eventually(T, || async move {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await;
        assert!(closed, "{addr} still accepts after shutdown");
    }
}

#[tokio::test]
async fn fixed_port_in_use_is_a_typed_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config =
        EmulatorConfig::from_toml_str(&format!("admin_port = {port}\n[[region]]\nname = \"p\"\n"))
            .unwrap();
    let e = Emulator::start(config).await.unwrap_err();
    assert!(e.to_string().contains(&port.to_string()), "{e}");
}
