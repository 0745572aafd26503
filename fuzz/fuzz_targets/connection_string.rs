#![no_main]
//! Connection string parsing never panics; whatever it accepts carries the values of the
//! string, rebuilds to a string that parses the same, and never shows its key in `Debug`.
use libfuzzer_sys::fuzz_target;
use twinhub::config::connstr::{parse_event_hubs, parse_iot_hub};
use twinhub::spec::Secret;

/// A value of the parsed string: non-empty, trimmed, and free of the separator.
fn is_value(v: &str) -> bool {
    !v.is_empty() && v.trim() == v && !v.contains(';')
}

fuzz_target!(|s: &str| {
    if let Ok(eh) = parse_event_hubs(s) {
        let key = eh.key.expose();
        assert!(s.contains(key));
        for v in [eh.host.as_str(), &eh.entity, &eh.key_name, key] {
            assert!(is_value(v), "{v:?}");
        }
        assert!(!eh.entity.contains('/') && !eh.entity.contains(char::is_whitespace));
        // Debug must not depend on the key at all: the same spec with another key prints
        // the same.
        let mut other = eh.clone();
        other.key = Secret::new("another key");
        assert_eq!(format!("{eh:?}"), format!("{other:?}"));
        let emulator = if eh.development_emulator {
            ";UseDevelopmentEmulator=true"
        } else {
            ""
        };
        let rebuilt = format!(
            "Endpoint=sb://{}/;SharedAccessKeyName={};SharedAccessKey={};EntityPath={}{emulator}",
            eh.host, eh.key_name, key, eh.entity
        );
        assert_eq!(parse_event_hubs(&rebuilt).as_ref(), Ok(&eh), "{rebuilt:?}");
    }
    if let Ok(hub) = parse_iot_hub(s) {
        let key = hub.key.expose();
        assert!(s.contains(key));
        for v in [hub.host.as_str(), &hub.device_id, key] {
            assert!(is_value(v), "{v:?}");
        }
        assert!(hub.port > 0);
        let mut other = hub.clone();
        other.key = Secret::new("YW5vdGhlcg==");
        assert_eq!(format!("{hub:?}"), format!("{other:?}"));
        // The host comes back without brackets; an IPv6 address needs them again.
        let host = if hub.host.contains(':') {
            format!("[{}]", hub.host)
        } else {
            hub.host.clone()
        };
        let emulator = if hub.tls {
            ""
        } else {
            ";UseDevelopmentEmulator=true"
        };
        let rebuilt = format!(
            "HostName={host}:{};DeviceId={};SharedAccessKey={key}{emulator}",
            hub.port, hub.device_id
        );
        assert_eq!(parse_iot_hub(&rebuilt).as_ref(), Ok(&hub), "{rebuilt:?}");
    }
});
