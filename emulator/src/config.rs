//! What to start: regions, their ports, keys, tiers and hub names, and external proxies.
//!
//! Everything defaults to something that runs with no file at all: ports are ephemeral (0)
//! so parallel tests never collide, keys are generated per start, the tier is Standard and
//! the single event hub is `telemetry`. A TOML file can fix any of it:
//!
//! ```toml
//! bind = "127.0.0.1"     # address every listener binds
//! admin_port = 7100
//!
//! [[region]]
//! name = "primary"
//! http_port = 7101
//! mqtt_port = 7102
//! tier = "basic"          # basic (256 KB) | standard (1 MB)
//! key_name = "send"
//! key = "a-fixed-key-for-demos"
//! event_hubs = ["telemetry", "alerts"]
//! jsonl = "primary.jsonl" # optional: append every record here
//! iot_hub_addr = "127.0.0.2"  # IoT Hub endpoint's address (default: a random 127.a.b.c)
//! iot_hub_port = 8883         # default 8883, IoT Hub's; 0 = ephemeral
//! iot_hub_key = "cGFzc3dvcmQ="   # base64; any device id signed with it is accepted
//! iot_hub_device = "meter-1"  # device of the printed connection string
//! iot_hub_websocket_port = 443  # MQTT over WebSockets; default 443, or ephemeral if 443 can't be bound
//!
//! [[proxy]]               # a fault switch in front of something else (e.g. a mosquitto)
//! name = "mosquitto"
//! upstream = "127.0.0.1:1883"
//! port = 7200
//! ```
//!
//! Unknown keys are errors that name the key, the line and the column.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Basic tier's largest publication (single event or batch): 256 KB.
pub const BASIC_MAX_BYTES: usize = 256 * 1024;
/// Standard tier's largest publication (single event or batch): 1 MB.
pub const STANDARD_MAX_BYTES: usize = 1024 * 1024;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown or mistyped key (the message names it).
    #[error("invalid emulator config: {0}")]
    Toml(#[from] toml::de::Error),
    /// The values parse but make no sense together.
    #[error("invalid emulator config: {0}")]
    Invalid(String),
}

/// The Event Hubs tier a region imitates; it sets the largest accepted publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// 256 KB per publication.
    Basic,
    /// 1 MB per publication.
    #[default]
    Standard,
}

impl Tier {
    /// The largest request body (single event or whole batch) the tier accepts, in bytes.
    pub fn max_publication_bytes(self) -> usize {
        match self {
            Tier::Basic => BASIC_MAX_BYTES,
            Tier::Standard => STANDARD_MAX_BYTES,
        }
    }
}

/// One emulated region.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Region name, used in the admin API and in the start line (`primary`, `secondary`).
    pub name: String,
    /// Public port of the HTTP ingest (Event Hubs REST and generic JSON); 0 = ephemeral.
    #[serde(default)]
    pub http_port: u16,
    /// Public port of the MQTT broker (3.1.1 and 5 on the same port); 0 = ephemeral.
    #[serde(default)]
    pub mqtt_port: u16,
    /// Tier whose size limit is enforced.
    #[serde(default)]
    pub tier: Tier,
    /// Overrides the tier's limit (bytes), e.g. to test splitting with small payloads.
    #[serde(default)]
    pub max_publication_bytes: Option<usize>,
    /// The SAS rule name (`skn`) tokens must carry.
    #[serde(default = "default_key_name")]
    pub key_name: String,
    /// The SAS key (Event Hubs style: the text itself is the HMAC key). `None` generates one.
    #[serde(default)]
    pub key: Option<String>,
    /// Event hub names the REST ingest accepts; any other gets 404. The first one is the
    /// `EntityPath` of the printed connection string.
    #[serde(default = "default_hubs")]
    pub event_hubs: Vec<String>,
    /// Append every accepted record to this file as one JSON object per line.
    #[serde(default)]
    pub jsonl: Option<PathBuf>,
    /// The IoT Hub endpoint's IP address. `None` picks a random 127.a.b.c per start (another
    /// one if it is taken), so parallel runs can all use port 8883.
    #[serde(default)]
    pub iot_hub_addr: Option<IpAddr>,
    /// The IoT Hub endpoint's port: 8883 (IoT Hub's MQTT port) by default; 0 = ephemeral.
    #[serde(default = "default_iot_hub_port")]
    pub iot_hub_port: u16,
    /// The IoT Hub signing key, base64 (IoT Hub style: decoded before use). Any device id
    /// whose SAS token it signs is accepted, as if registered. `None` generates one.
    #[serde(default)]
    pub iot_hub_key: Option<String>,
    /// The device id of the ready connection string the emulator prints.
    #[serde(default = "default_iot_hub_device")]
    pub iot_hub_device: String,
    /// Cap of the IoT Hub idle timeout in milliseconds (IoT Hub: 1767 s); lower it to see
    /// the cap act in a test.
    #[serde(default)]
    pub iot_hub_max_idle_ms: Option<u64>,
    /// The port of IoT Hub's MQTT-over-WebSockets endpoint, on the same address. `None`:
    /// 443 (IoT Hub's) when it can be bound, else an ephemeral port (printed in the start
    /// line as `iot_hub_websocket`); 0 = ephemeral.
    #[serde(default)]
    pub iot_hub_websocket_port: Option<u16>,
}

impl RegionConfig {
    /// A region with ephemeral ports, a generated key, the Standard tier and hub `telemetry`.
    pub fn new(name: impl Into<String>) -> Self {
        RegionConfig {
            name: name.into(),
            http_port: 0,
            mqtt_port: 0,
            tier: Tier::Standard,
            max_publication_bytes: None,
            key_name: default_key_name(),
            key: None,
            event_hubs: default_hubs(),
            jsonl: None,
            iot_hub_addr: None,
            iot_hub_port: default_iot_hub_port(),
            iot_hub_key: None,
            iot_hub_device: default_iot_hub_device(),
            iot_hub_max_idle_ms: None,
            iot_hub_websocket_port: None,
        }
    }

    /// Fixes the IoT Hub endpoint's address and port.
    pub fn iot_hub_addr(mut self, addr: SocketAddr) -> Self {
        self.iot_hub_addr = Some(addr.ip());
        self.iot_hub_port = addr.port();
        self
    }

    /// Sets a fixed IoT Hub signing key (base64).
    pub fn iot_hub_key(mut self, key: impl Into<String>) -> Self {
        self.iot_hub_key = Some(key.into());
        self
    }

    /// Caps the IoT Hub idle timeout (keep-alive) below IoT Hub's 1767 s.
    pub fn iot_hub_max_idle(mut self, cap: std::time::Duration) -> Self {
        self.iot_hub_max_idle_ms = Some(u64::try_from(cap.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Sets the tier.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// Sets a fixed SAS key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Overrides the size limit in bytes.
    pub fn max_publication_bytes(mut self, bytes: usize) -> Self {
        self.max_publication_bytes = Some(bytes);
        self
    }

    /// Replaces the list of event hub names.
    pub fn event_hubs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, hubs: I) -> Self {
        self.event_hubs = hubs.into_iter().map(Into::into).collect();
        self
    }

    /// Appends every record to a JSONL file.
    pub fn jsonl(mut self, path: impl Into<PathBuf>) -> Self {
        self.jsonl = Some(path.into());
        self
    }

    /// The limit actually enforced.
    pub fn limit(&self) -> usize {
        self.max_publication_bytes
            .unwrap_or_else(|| self.tier.max_publication_bytes())
    }
}

/// A fault switch in front of an external TCP service (for example a mosquitto a test started).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Name used in the admin API (`/_admin/regions/{name}/fault` works for proxies too).
    pub name: String,
    /// Where the real service listens.
    pub upstream: SocketAddr,
    /// Public port of the proxy; 0 = ephemeral.
    #[serde(default)]
    pub port: u16,
}

/// Everything the emulator starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Address every public listener binds (default 127.0.0.1). Internal listeners always
    /// bind 127.0.0.1.
    #[serde(default = "default_bind")]
    pub bind: IpAddr,
    /// Admin API port; 0 = ephemeral.
    #[serde(default)]
    pub admin_port: u16,
    /// The regions, in order.
    #[serde(default, rename = "region")]
    pub regions: Vec<RegionConfig>,
    /// External services to put a fault switch in front of.
    #[serde(default, rename = "proxy")]
    pub proxies: Vec<ProxyConfig>,
    /// Where to write the run's CA certificate (`ca.pem`); `None` = a fresh directory under
    /// the system temp dir. The file is removed when the emulator stops.
    #[serde(default)]
    pub ca_dir: Option<PathBuf>,
}

impl Default for EmulatorConfig {
    /// Two regions, `primary` and `secondary`, everything ephemeral.
    fn default() -> Self {
        EmulatorConfig::with_regions(["primary", "secondary"])
    }
}

impl EmulatorConfig {
    /// Regions with the given names and default settings.
    pub fn with_regions<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        EmulatorConfig {
            bind: default_bind(),
            admin_port: 0,
            regions: names.into_iter().map(RegionConfig::new).collect(),
            proxies: Vec::new(),
            ca_dir: None,
        }
    }

    /// No regions yet; add them with [`EmulatorConfig::region`].
    pub fn empty() -> Self {
        EmulatorConfig::with_regions(Vec::<String>::new())
    }

    /// Adds a region.
    pub fn region(mut self, region: RegionConfig) -> Self {
        self.regions.push(region);
        self
    }

    /// Adds a proxy in front of an external service.
    pub fn proxy(mut self, name: impl Into<String>, upstream: SocketAddr) -> Self {
        self.proxies.push(ProxyConfig {
            name: name.into(),
            upstream,
            port: 0,
        });
        self
    }

    /// Parses TOML text (see the module docs for the keys).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: EmulatorConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        EmulatorConfig::from_toml_str(&text)
    }

    /// Checks names are unique and usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        let all = self
            .regions
            .iter()
            .map(|r| &r.name)
            .chain(self.proxies.iter().map(|p| &p.name));
        for name in all {
            if name.is_empty() || name.contains(['/', ' ', ',']) {
                return Err(ConfigError::Invalid(format!(
                    "name {name:?} must be non-empty without `/`, `,` or spaces"
                )));
            }
            if !names.insert(name.clone()) {
                return Err(ConfigError::Invalid(format!("name {name:?} is used twice")));
            }
        }
        for r in &self.regions {
            if r.event_hubs.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "region {:?}: `event_hubs` must name at least one hub",
                    r.name
                )));
            }
            if let Some(h) = r
                .event_hubs
                .iter()
                .find(|h| h.is_empty() || h.contains('/') || h.starts_with('_') || *h == "ingest")
            {
                return Err(ConfigError::Invalid(format!(
                    "region {:?}: event hub name {h:?} is not usable (empty, has `/`, starts with `_` or is `ingest`)",
                    r.name
                )));
            }
            if r.key.as_deref() == Some("") {
                return Err(ConfigError::Invalid(format!(
                    "region {:?}: `key` is empty",
                    r.name
                )));
            }
            if let Some(k) = &r.iot_hub_key {
                let mut buf = [0u8; twinhub_core::sas::MAX_KEY_BYTES];
                use base64::Engine as _;
                if base64::engine::general_purpose::STANDARD
                    .decode_slice(k.as_bytes(), &mut buf)
                    .map_or(true, |n| n == 0)
                {
                    return Err(ConfigError::Invalid(format!(
                        "region {:?}: `iot_hub_key` must be non-empty base64 of at most {} bytes",
                        r.name,
                        twinhub_core::sas::MAX_KEY_BYTES
                    )));
                }
            }
            if !crate::iothub::valid_device_id(&r.iot_hub_device) {
                return Err(ConfigError::Invalid(format!(
                    "region {:?}: `iot_hub_device` {:?} is not a valid IoT Hub device id",
                    r.name, r.iot_hub_device
                )));
            }
            if r.limit() == 0 {
                return Err(ConfigError::Invalid(format!(
                    "region {:?}: `max_publication_bytes` must be positive",
                    r.name
                )));
            }
        }
        Ok(())
    }
}

fn default_bind() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn default_key_name() -> String {
    "send".into()
}

fn default_iot_hub_port() -> u16 {
    8883
}

fn default_iot_hub_device() -> String {
    "twinhub-device".into()
}

fn default_hubs() -> Vec<String> {
    vec!["telemetry".into()]
}

/// A fresh random key (32 random bytes as hex). Generated per start so no key is ever
/// committed or shared between runs; the std hasher's random seed is the entropy source.
pub(crate) fn generate_key() -> String {
    let mut out = String::with_capacity(64);
    for i in 0..4u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(i);
        let _ = write!(out, "{:016x}", h.finish());
    }
    out
}

/// A fresh random IoT Hub key: 32 random bytes, base64, like the keys IoT Hub generates.
pub(crate) fn generate_iot_hub_key() -> String {
    use base64::Engine as _;
    let mut bytes = Vec::with_capacity(32);
    for i in 0..4u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(i);
        bytes.extend_from_slice(&h.finish().to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_no_regions_and_defaults() {
        let c = EmulatorConfig::from_toml_str("").unwrap();
        assert!(c.regions.is_empty());
        assert_eq!(c.admin_port, 0);
    }

    #[test]
    fn full_file_parses() {
        let c = EmulatorConfig::from_toml_str(
            r#"
            admin_port = 7100
            [[region]]
            name = "primary"
            http_port = 7101
            tier = "basic"
            key = "k"
            event_hubs = ["a", "b"]
            [[proxy]]
            name = "mosq"
            upstream = "127.0.0.1:1883"
            "#,
        )
        .unwrap();
        assert_eq!(c.regions[0].limit(), BASIC_MAX_BYTES);
        assert_eq!(c.regions[0].event_hubs, ["a", "b"]);
        assert_eq!(c.proxies[0].upstream.port(), 1883);
    }

    #[test]
    fn unknown_key_is_named() {
        let e =
            EmulatorConfig::from_toml_str("[[region]]\nname = \"p\"\nhttp_prot = 1\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("http_prot"), "{msg}");
        let e = EmulatorConfig::from_toml_str("admin = 1\n").unwrap_err();
        assert!(e.to_string().contains("admin"), "{e}");
    }

    #[test]
    fn duplicate_and_bad_names_are_refused() {
        let e =
            EmulatorConfig::from_toml_str("[[region]]\nname = \"p\"\n[[region]]\nname = \"p\"\n")
                .unwrap_err();
        assert!(e.to_string().contains("twice"));
        let e = EmulatorConfig::from_toml_str("[[region]]\nname = \"p\"\nevent_hubs = []\n")
            .unwrap_err();
        assert!(e.to_string().contains("event_hubs"));
        let e = EmulatorConfig::from_toml_str("[[region]]\nname = \"p\"\ntier = \"gold\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("gold"), "{e}");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(generate_key(), generate_key());
        assert_eq!(generate_key().len(), 64);
    }
}
