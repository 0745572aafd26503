//! Azure connection strings, accepted as the portal and the emulator print them.
//!
//! A connection string is `;`-separated `Key=value` pairs. Each pair is split on its
//! *first* `=` because base64 keys end in `=`; keys are case-insensitive; empty parts (a
//! trailing `;`) are skipped; keys twinhub does not use (`TransportType`, ...) are ignored
//! as Azure's own parsers do. Errors name what is missing or wrong and never include a
//! value, because the value next to a bad key is often the key itself.

use std::time::Duration;

use base64::Engine as _;

use crate::spec::{
    EventHubsSpec, IotHubSpec, KafkaCompression, KafkaSasl, KafkaSpec, SaslMechanism, Secret,
};

/// Lifetime of the SAS tokens twinhub signs from a connection string's key. One hour keeps
/// a leaked token short-lived while renewals stay rare.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// IoT Hub's MQTT-over-TLS port.
pub const IOT_HUB_PORT: u16 = 8883;

/// Plain MQTT port, used for a local broker standing in for IoT Hub.
const PLAIN_MQTT_PORT: u16 = 1883;

/// Why a connection string was refused. Never carries any part of the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnStrError {
    /// A part without `=`.
    #[error("part {part} has no `=` (expected Key=value pairs separated by `;`)")]
    NoEquals {
        /// 1-based position of the part.
        part: usize,
    },
    /// A required key is absent.
    #[error("is missing {0}")]
    Missing(&'static str),
    /// A required key is present with an empty value.
    #[error("has an empty {0}")]
    Empty(&'static str),
    /// A key appears twice, so which one is meant is unclear.
    #[error("has {0} twice")]
    Duplicate(&'static str),
    /// A key's value is malformed.
    #[error("has an invalid {key}: {problem}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// Only a pre-signed `SharedAccessSignature` was given. twinhub signs and renews its
    /// own tokens, which a fixed signature cannot do.
    #[error(
        "has SharedAccessSignature but no SharedAccessKey; twinhub signs and renews its own \
         tokens, so give SharedAccessKeyName and SharedAccessKey (Event Hubs) or \
         SharedAccessKey (IoT Hub)"
    )]
    SignatureUnsupported,
}

/// The recognised values of one connection string, by key index.
struct Pairs<'a, const N: usize> {
    values: [Option<&'a str>; N],
    keys: [&'static str; N],
}

impl<'a, const N: usize> Pairs<'a, N> {
    fn parse(s: &'a str, keys: [&'static str; N]) -> Result<Self, ConnStrError> {
        let mut values = [None; N];
        for (i, part) in s.split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v) = part
                .split_once('=')
                .ok_or(ConnStrError::NoEquals { part: i + 1 })?;
            let k = k.trim();
            if let Some(at) = keys.iter().position(|name| name.eq_ignore_ascii_case(k)) {
                if values[at].is_some() {
                    return Err(ConnStrError::Duplicate(keys[at]));
                }
                values[at] = Some(v.trim());
            }
        }
        Ok(Pairs { values, keys })
    }

    fn get(&self, at: usize) -> Option<&'a str> {
        self.values.get(at).copied().flatten()
    }

    /// The value at `at`, required and non-empty.
    fn require(&self, at: usize) -> Result<&'a str, ConnStrError> {
        let key = self.keys.get(at).copied().unwrap_or("a key");
        match self.get(at) {
            None => Err(ConnStrError::Missing(key)),
            Some("") => Err(ConnStrError::Empty(key)),
            Some(v) => Ok(v),
        }
    }

    fn flag(&self, at: usize) -> Result<bool, ConnStrError> {
        match self.get(at) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(ConnStrError::Invalid {
                key: self.keys.get(at).copied().unwrap_or("a key"),
                problem: "must be true or false",
            }),
        }
    }
}

/// Parses an Event Hubs connection string, entity level:
/// `Endpoint=sb://{namespace}.servicebus.windows.net/;SharedAccessKeyName=..;SharedAccessKey=..;EntityPath=..`.
///
/// `EntityPath` is required (a namespace-level string does not say which hub to send to).
/// `UseDevelopmentEmulator=true` marks a local emulator, reached over plain HTTP at the
/// endpoint's host and port. Since its tokens then travel unencrypted, the transport
/// accepts it only for a loopback host (`localhost`, `127.0.0.0/8`, `::1`); publish a
/// containerised emulator's port on loopback.
///
/// ```
/// use twinhub::config::connstr::parse_event_hubs;
/// let s = "Endpoint=sb://127.0.0.1:7101/;SharedAccessKeyName=send;\
///          SharedAccessKey=a2V5=;EntityPath=telemetry;UseDevelopmentEmulator=true";
/// let eh = parse_event_hubs(s).unwrap();
/// assert_eq!(eh.host, "127.0.0.1:7101");
/// assert_eq!(eh.entity, "telemetry");
/// assert_eq!(eh.key.expose(), "a2V5=");
/// assert!(eh.development_emulator);
/// ```
pub fn parse_event_hubs(s: &str) -> Result<EventHubsSpec, ConnStrError> {
    const ENDPOINT: usize = 0;
    const KEY_NAME: usize = 1;
    const KEY: usize = 2;
    const ENTITY: usize = 3;
    const EMULATOR: usize = 4;
    const SIGNATURE: usize = 5;
    let p = Pairs::parse(
        s,
        [
            "Endpoint",
            "SharedAccessKeyName",
            "SharedAccessKey",
            "EntityPath",
            "UseDevelopmentEmulator",
            "SharedAccessSignature",
        ],
    )?;
    let endpoint = p.require(ENDPOINT)?;
    let host = endpoint_host(endpoint)?;
    if p.get(KEY).is_none() && p.get(SIGNATURE).is_some() {
        return Err(ConnStrError::SignatureUnsupported);
    }
    let key_name = p.require(KEY_NAME)?;
    let key = p.require(KEY)?;
    let entity = p.require(ENTITY)?;
    if entity.contains('/') || entity.contains(char::is_whitespace) {
        return Err(ConnStrError::Invalid {
            key: "EntityPath",
            problem: "must be an event hub name without `/` or spaces",
        });
    }
    Ok(EventHubsSpec {
        host: host.to_owned(),
        entity: entity.to_owned(),
        key_name: key_name.to_owned(),
        key: Secret::new(key),
        development_emulator: p.flag(EMULATOR)?,
        token_ttl: DEFAULT_TOKEN_TTL,
    })
}

/// Event Hubs' Kafka port.
pub const EVENT_HUBS_KAFKA_PORT: u16 = 9093;

/// Plain Kafka port of a local Event Hubs emulator.
const EMULATOR_KAFKA_PORT: u16 = 9092;

/// Maps an Event Hubs connection string to its Kafka endpoint, as Azure documents it
/// (<https://learn.microsoft.com/azure/event-hubs/azure-event-hubs-kafka-overview>):
/// bootstrap `<namespace>:9093`, SASL_SSL with PLAIN, user `$ConnectionString`, the whole
/// connection string as password, the topic from `EntityPath`.
///
/// A port in `Endpoint` is kept (a test broker). `UseDevelopmentEmulator=true` means a
/// local emulator's plain Kafka port 9092 without TLS (refused by the transport unless the
/// host is loopback, since the password would travel in clear).
///
/// ```
/// use twinhub::config::connstr::parse_event_hubs_kafka;
/// use twinhub::spec::SaslMechanism;
/// let s = "Endpoint=sb://ns-east.servicebus.windows.net/;SharedAccessKeyName=send;\
///          SharedAccessKey=a2V5=;EntityPath=telemetry";
/// let k = parse_event_hubs_kafka(s).unwrap();
/// assert_eq!(k.bootstrap, [("ns-east.servicebus.windows.net".to_string(), 9093)]);
/// assert_eq!(k.topic, "telemetry");
/// assert!(k.tls && k.event_hubs);
/// let sasl = k.sasl.unwrap();
/// assert_eq!((sasl.mechanism, sasl.username.as_str()), (SaslMechanism::Plain, "$ConnectionString"));
/// assert_eq!(sasl.password.expose(), s);
/// ```
pub fn parse_event_hubs_kafka(s: &str) -> Result<KafkaSpec, ConnStrError> {
    let eh = parse_event_hubs(s)?;
    let (host, port) = split_host_port(&eh.host).map_err(|_| ConnStrError::Invalid {
        key: "Endpoint",
        problem: "must look like sb://<namespace>.servicebus.windows.net/",
    })?;
    let (tls, default_port) = if eh.development_emulator {
        (false, EMULATOR_KAFKA_PORT)
    } else {
        (true, EVENT_HUBS_KAFKA_PORT)
    };
    Ok(KafkaSpec {
        bootstrap: vec![(host, port.unwrap_or(default_port))],
        topic: eh.entity,
        tls,
        sasl: Some(KafkaSasl {
            mechanism: SaslMechanism::Plain,
            username: "$ConnectionString".to_owned(),
            password: Secret::new(s.trim()),
        }),
        compression: KafkaCompression::None,
        client_id: None,
        event_hubs: true,
    })
}

/// The `host[:port]` of `sb://host[:port]/`.
fn endpoint_host(endpoint: &str) -> Result<&str, ConnStrError> {
    const SHAPE: ConnStrError = ConnStrError::Invalid {
        key: "Endpoint",
        problem: "must look like sb://<namespace>.servicebus.windows.net/",
    };
    let (scheme, rest) = endpoint.split_once("://").ok_or(SHAPE)?;
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(SHAPE);
    }
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains(['/', '@', '?', '#']) || host.contains(char::is_whitespace)
    {
        return Err(SHAPE);
    }
    Ok(host)
}

/// Parses an IoT Hub device connection string:
/// `HostName={hub}.azure-devices.net;DeviceId={id};SharedAccessKey={base64}`.
///
/// The key must be base64 (it is decoded before signing). `HostName` may carry a port.
/// `UseDevelopmentEmulator=true` means a local plain-MQTT broker for tests: TLS off and,
/// without a port, 1883 (a loopback host only, as the SAS token travels unencrypted);
/// otherwise TLS is on and the port defaults to 8883.
///
/// `x509=true` instead of a key means X.509 authentication: the certificate and key come
/// from the endpoint's `client_cert` and `client_key` settings, and `SharedAccessKey` must
/// then be absent.
///
/// ```
/// use twinhub::config::connstr::parse_iot_hub;
/// let hub = parse_iot_hub("HostName=h.azure-devices.net;DeviceId=d1;SharedAccessKey=a2V5").unwrap();
/// assert_eq!((hub.host.as_str(), hub.port, hub.tls), ("h.azure-devices.net", 8883, true));
/// ```
pub fn parse_iot_hub(s: &str) -> Result<IotHubSpec, ConnStrError> {
    const HOST: usize = 0;
    const DEVICE: usize = 1;
    const KEY: usize = 2;
    const EMULATOR: usize = 3;
    const SIGNATURE: usize = 4;
    const MODULE: usize = 5;
    const X509: usize = 6;
    let p = Pairs::parse(
        s,
        [
            "HostName",
            "DeviceId",
            "SharedAccessKey",
            "UseDevelopmentEmulator",
            "SharedAccessSignature",
            "ModuleId",
            "x509",
        ],
    )?;
    let host_name = p.require(HOST)?;
    let device_id = p.require(DEVICE)?;
    let x509 = p.flag(X509)?;
    if x509 && (p.get(KEY).is_some() || p.get(SIGNATURE).is_some()) {
        return Err(ConnStrError::Invalid {
            key: "x509",
            problem: "x509=true does not go with SharedAccessKey or SharedAccessSignature",
        });
    }
    if !x509 && p.get(KEY).is_none() && p.get(SIGNATURE).is_some() {
        return Err(ConnStrError::SignatureUnsupported);
    }
    let key = if x509 { "" } else { p.require(KEY)? };
    if p.get(MODULE).is_some() {
        return Err(ConnStrError::Invalid {
            key: "ModuleId",
            problem: "module identities are not supported; use a device connection string",
        });
    }
    if base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_err()
    {
        return Err(ConnStrError::Invalid {
            key: "SharedAccessKey",
            problem: "is not base64",
        });
    }
    let emulator = p.flag(EMULATOR)?;
    let (host, port) = split_host_port(host_name).map_err(|problem| ConnStrError::Invalid {
        key: "HostName",
        problem,
    })?;
    let default_port = if emulator {
        PLAIN_MQTT_PORT
    } else {
        IOT_HUB_PORT
    };
    Ok(IotHubSpec {
        host,
        device_id: device_id.to_owned(),
        key: Secret::new(key),
        port: port.unwrap_or(default_port),
        tls: !emulator,
        token_ttl: DEFAULT_TOKEN_TTL,
        x509,
        client_cert: None,
        transport: crate::spec::IotHubTransport::Mqtt,
    })
}

/// Whether an IoT Hub connection string's `HostName` names a port itself (so a transport
/// with another default port, WebSockets' 443, keeps it). `false` for a string that
/// does not parse.
pub fn iot_hub_names_port(s: &str) -> bool {
    Pairs::parse(s, ["HostName"])
        .ok()
        .and_then(|p| p.get(0).map(split_host_port))
        .is_some_and(|r| r.is_ok_and(|(_, port)| port.is_some()))
}

/// Splits `host[:port]` or `[v6]:port`; the host comes back without brackets, ready for
/// name resolution.
pub(crate) fn split_host_port(a: &str) -> Result<(String, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or("has an unclosed `[` around an IPv6 address")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has an invalid IPv6 address in brackets");
        }
        match after {
            "" => (h, None),
            _ => (
                h,
                Some(after.strip_prefix(':').ok_or("has text after `]`")?),
            ),
        }
    } else {
        match a.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err("needs brackets around an IPv6 address, e.g. [::1]:1883");
            }
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#']) || host.contains(char::is_whitespace)
    {
        return Err("must be a host name or address");
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err("has a port that is not a number from 1 to 65535"),
        },
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EH: &str = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;\
                      SharedAccessKey=abc==;EntityPath=telemetry";

    #[test]
    fn event_hubs_keys_are_case_insensitive_and_values_keep_equals() {
        let e = parse_event_hubs(&EH.to_lowercase().replace("abc==", "AbC==")).unwrap();
        assert_eq!(e.key.expose(), "AbC==");
        let e = parse_event_hubs(&format!("{EH};TransportType=Amqp;")).unwrap();
        assert_eq!(e.host, "ns.servicebus.windows.net");
        assert!(!e.development_emulator);
    }

    #[test]
    fn event_hubs_errors() {
        assert_eq!(
            parse_event_hubs("garbage"),
            Err(ConnStrError::NoEquals { part: 1 })
        );
        assert_eq!(parse_event_hubs(""), Err(ConnStrError::Missing("Endpoint")));
        let no_entity = EH.replace(";EntityPath=telemetry", "");
        assert_eq!(
            parse_event_hubs(&no_entity),
            Err(ConnStrError::Missing("EntityPath"))
        );
        assert_eq!(
            parse_event_hubs(&EH.replace("sb://", "")),
            Err(ConnStrError::Invalid {
                key: "Endpoint",
                problem: "must look like sb://<namespace>.servicebus.windows.net/"
            })
        );
        assert_eq!(
            parse_event_hubs(&format!("{EH};endpoint=sb://x/")),
            Err(ConnStrError::Duplicate("Endpoint"))
        );
        assert_eq!(
            parse_event_hubs(&format!("{EH};UseDevelopmentEmulator=yes")),
            Err(ConnStrError::Invalid {
                key: "UseDevelopmentEmulator",
                problem: "must be true or false"
            })
        );
        let sas = "Endpoint=sb://ns/;SharedAccessSignature=SharedAccessSignature sr=x;EntityPath=t";
        assert_eq!(
            parse_event_hubs(sas),
            Err(ConnStrError::SignatureUnsupported)
        );
    }

    #[test]
    fn iot_hub_ports_and_emulator() {
        let h = parse_iot_hub(
            "HostName=127.0.0.1:18830;DeviceId=d;SharedAccessKey=a2V5;UseDevelopmentEmulator=true",
        )
        .unwrap();
        assert_eq!(
            (h.host.as_str(), h.port, h.tls),
            ("127.0.0.1", 18830, false)
        );
        let h = parse_iot_hub(
            "HostName=[::1];DeviceId=d;SharedAccessKey=a2V5;UseDevelopmentEmulator=true",
        )
        .unwrap();
        assert_eq!((h.host.as_str(), h.port, h.tls), ("::1", 1883, false));
        assert_eq!(
            parse_iot_hub("HostName=h;DeviceId=d;SharedAccessKey=not base64!"),
            Err(ConnStrError::Invalid {
                key: "SharedAccessKey",
                problem: "is not base64"
            })
        );
        assert_eq!(
            parse_iot_hub("HostName=h;SharedAccessKey=a2V5"),
            Err(ConnStrError::Missing("DeviceId"))
        );
        assert_eq!(
            parse_iot_hub("HostName=;DeviceId=d;SharedAccessKey=a2V5"),
            Err(ConnStrError::Empty("HostName"))
        );
    }

    #[test]
    fn event_hubs_kafka_settings() {
        let k = parse_event_hubs_kafka(EH).unwrap();
        assert_eq!(
            k.bootstrap,
            [("ns.servicebus.windows.net".to_string(), 9093)]
        );
        assert_eq!(k.topic, "telemetry");
        assert!(k.tls && k.event_hubs);
        assert_eq!(k.compression, KafkaCompression::None);
        let sasl = k.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::Plain);
        assert_eq!(sasl.username, "$ConnectionString");
        assert_eq!(sasl.password.expose(), EH);
        assert!(!format!("{k:?}").contains("abc=="));

        // A port in Endpoint is kept; the emulator speaks plain Kafka on 9092.
        let k = parse_event_hubs_kafka(&EH.replace("ns.servicebus.windows.net", "127.0.0.1:19093"))
            .unwrap();
        assert_eq!(k.bootstrap, [("127.0.0.1".to_string(), 19093)]);
        let k = parse_event_hubs_kafka(
            &(EH.replace("ns.servicebus.windows.net", "localhost")
                + ";UseDevelopmentEmulator=true"),
        )
        .unwrap();
        assert_eq!((k.bootstrap[0].1, k.tls), (9092, false));

        // What the REST parser refuses, the Kafka mapping refuses too.
        assert_eq!(
            parse_event_hubs_kafka(&EH.replace(";EntityPath=telemetry", "")),
            Err(ConnStrError::Missing("EntityPath"))
        );
    }
}
