//! What the transports share: the error type, TLS, SAS token caching, HTTP status mapping.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::{ClientConfig, RootCertStore};
use twinhub_core::sas::{SasError, SasKey};
use twinhub_core::{Outcome, RejectReason};

use crate::spec::{Bind, Secret};

/// How long one send waits for the hub unless the transport was built with another value.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a transport or its TLS configuration could not be built. Messages name the problem
/// and never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The CA file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    CaFileRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate, or a PEM block does not decode.
    #[error("CA file {path} is not usable: {reason}")]
    CaFileInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused to build a client configuration.
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    /// The HTTP client could not be built.
    #[error("HTTP client could not be built: {0}")]
    HttpClient(String),
    /// The endpoint's settings are not usable (named field, never its secret value).
    #[error("invalid endpoint setting: {0}")]
    InvalidSpec(String),
    /// An IoT Hub device id holds an MQTT wildcard (`#` or `+`): valid for IoT Hub, but it
    /// would have to appear as is in every publish topic, where MQTT forbids wildcards.
    #[error(
        "IoT Hub device id {device_id:?} contains {character:?}, an MQTT wildcard: it cannot \
         appear in the device's publish topic, so no message of this device could be sent \
         over MQTT; use a device id without `#` and `+`"
    )]
    WildcardInDeviceId {
        /// The device id.
        device_id: String,
        /// The first wildcard character in it.
        character: char,
    },
    /// The link's binding cannot be honoured by this transport; sending over the default
    /// route instead could use the wrong (for example metered) link, so it is refused.
    #[error("{transport} cannot bind {bind}")]
    BindUnsupported {
        /// Which transport.
        transport: &'static str,
        /// The requested binding.
        bind: String,
    },
    /// The SAS key is not usable (for IoT Hub: not base64).
    #[error("SAS key is not usable: {0}")]
    SasKey(SasError),
    /// The client certificate or its key is not usable.
    #[error(transparent)]
    ClientCert(#[from] crate::client_cert::ClientCertError),
    /// A plain-text endpoint on another host would carry credentials readable on every hop.
    #[error(
        "{what} would send credentials in plain text to {host}; use TLS, or a loopback \
         host for a local broker or emulator"
    )]
    PlaintextCredentials {
        /// What makes the endpoint plain text (for example `UseDevelopmentEmulator=true`).
        what: &'static str,
        /// The host it names.
        host: String,
    },
}

/// Whether `host` (a name or address, with or without a port) is this machine itself.
/// Only literal loopback addresses and `localhost` count: a name resolved now could
/// resolve elsewhere later.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        // One colon separates a port; more make an IPv6 literal without brackets.
        None if host.matches(':').count() == 1 => host.split(':').next().unwrap_or(host),
        None => host,
    };
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses credentials over plain text to anything but this machine: TLS can't be
/// switched off, so neither may a plain-text endpoint quietly stand in for it.
pub(crate) fn plaintext_credentials(what: &'static str, host: &str) -> Result<(), TransportError> {
    if is_loopback_host(host) {
        Ok(())
    } else {
        Err(TransportError::PlaintextCredentials {
            what,
            host: host.to_string(),
        })
    }
}

/// TLS client settings: rustls with the ring provider, the web PKI roots plus every PEM
/// certificate in `ca_file`. Verification is always on; nothing in this crate turns it off.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TransportError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| TransportError::CaFileRead {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |reason: String| TransportError::CaFileInvalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut added = 0usize;
        // rustls' own PEM parser (rustls-pemfile is unmaintained and wraps the same code).
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| invalid(format!("PEM does not decode: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("certificate refused: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(invalid("no PEM certificate found".into()));
        }
    }
    // An explicit provider: the process-wide default may be unset or another one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a SAS token valid for `ttl` from now.
pub(crate) fn sign_token(
    resource: &str,
    key: &SasKey<'_>,
    key_name: Option<&str>,
    ttl: Duration,
) -> Result<String, SasError> {
    let expiry = unix_now().saturating_add(ttl.as_secs().max(1));
    let mut buf = vec![0u8; 256 + 3 * (resource.len() + key_name.map_or(0, str::len))];
    twinhub_core::sas::sign(resource, key, key_name, expiry, &mut buf).map(str::to_string)
}

/// A SAS token reused until 80% of its lifetime has passed, then signed anew, so a
/// request never carries a token about to expire.
pub(crate) struct TokenCache {
    resource: String,
    key: Secret,
    key_name: Option<String>,
    base64_key: bool,
    ttl: Duration,
    current: Mutex<Option<(Arc<str>, Instant)>>,
}

impl TokenCache {
    pub(crate) fn new(
        resource: String,
        key: Secret,
        key_name: Option<String>,
        base64_key: bool,
        ttl: Duration,
    ) -> Result<Self, TransportError> {
        let cache = TokenCache {
            resource,
            key,
            key_name,
            base64_key,
            ttl: ttl.max(Duration::from_secs(1)),
            current: Mutex::new(None),
        };
        // Signing once here turns a bad key into a build error instead of a send failure.
        cache.fresh().map_err(TransportError::SasKey)?;
        Ok(cache)
    }

    fn key(&self) -> SasKey<'_> {
        if self.base64_key {
            SasKey::Base64(self.key.expose())
        } else {
            SasKey::Text(self.key.expose())
        }
    }

    /// A token from the cache, or a new one when the cached one is due for renewal.
    pub(crate) fn get(&self) -> Result<Arc<str>, SasError> {
        let mut slot = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, renew_at)) = slot.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        drop(slot);
        let token = self.fresh()?;
        slot = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some((token.clone(), Instant::now() + self.ttl.mul_f64(0.8)));
        Ok(token)
    }

    /// Signs a new token and caches it (after a 401, the cached one may be the problem).
    pub(crate) fn refresh(&self) -> Result<Arc<str>, SasError> {
        let token = self.fresh()?;
        let mut slot = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some((token.clone(), Instant::now() + self.ttl.mul_f64(0.8)));
        Ok(token)
    }

    fn fresh(&self) -> Result<Arc<str>, SasError> {
        sign_token(
            &self.resource,
            &self.key(),
            self.key_name.as_deref(),
            self.ttl,
        )
        .map(Arc::from)
    }

    /// When a token made now must be replaced (80% of its lifetime).
    pub(crate) fn renew_after(&self) -> Duration {
        self.ttl.mul_f64(0.8)
    }

    /// A new token, uncached (each MQTT connection signs its own password).
    pub(crate) fn sign_now(&self) -> Result<String, SasError> {
        self.fresh().map(|t| t.to_string())
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("resource", &self.resource)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Maps an HTTP status to an outcome (PROTOCOLS.md §1.4). 401 is handled by the caller
/// (Event Hubs retries once with a fresh token).
pub(crate) fn classify_status(status: u16, retry_after: Option<&str>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        400 => Outcome::Rejected(RejectReason::Malformed),
        401 => Outcome::Unauthorized,
        // Quota exceeded: wait and retry the same hub.
        403 => Outcome::Throttled { retry_after: None },
        413 => Outcome::Rejected(RejectReason::TooLarge),
        429 => Outcome::Throttled {
            retry_after: retry_after.and_then(parse_retry_after),
        },
        // 404/410 (no such entity), 5xx, and anything unexpected: the endpoint is not
        // usable now. Unexpected 4xx (415, 422, ...) are configuration problems, so the
        // records are kept for another endpoint rather than dropped as malformed.
        _ => Outcome::ServerError,
    }
}

/// `Retry-After` in delta-seconds; the HTTP-date form is rare for throttling and ignored.
pub(crate) fn parse_retry_after(v: &str) -> Option<twinhub_core::Duration> {
    v.trim()
        .parse::<u64>()
        .ok()
        .map(twinhub_core::Duration::from_secs)
}

/// Maps a request failure. A connect error means nothing left; a timeout means the
/// request may have arrived. A reset or refusal without any response is what a dead
/// region's load balancer does, so it counts as unreachable.
pub(crate) fn classify_error(e: &reqwest::Error) -> Outcome {
    if e.is_connect() {
        return Outcome::Unreachable;
    }
    if e.is_timeout() {
        return Outcome::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe
            ) {
                return Outcome::Unreachable;
            }
        }
        source = s.source();
    }
    Outcome::Timeout
}

/// A reqwest client for one route: our TLS, the link's binding, the request timeout.
pub(crate) fn http_client(
    bind: Option<&Bind>,
    tls: &Arc<ClientConfig>,
    request_timeout: Duration,
) -> Result<reqwest::Client, TransportError> {
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(ClientConfig::clone(tls))
        .timeout(request_timeout)
        .connect_timeout(request_timeout)
        .tcp_nodelay(true)
        // Idle connections are dropped soon, so a failed-over region is re-resolved.
        .pool_idle_timeout(Duration::from_secs(30));
    match bind {
        None => {}
        Some(Bind::Addr(ip)) => b = b.local_address(*ip),
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        Some(Bind::Interface(name)) => b = b.interface(name),
        #[cfg(not(any(target_os = "android", target_os = "fuchsia", target_os = "linux")))]
        Some(Bind::Interface(name)) => {
            return Err(TransportError::BindUnsupported {
                transport: "HTTP",
                bind: format!("interface {name} on this OS"),
            });
        }
    }
    b.build()
        .map_err(|e| TransportError::HttpClient(e.to_string()))
}

/// Appends the text of `id` (`device:epoch:seq`) to `out`. A device id's characters need
/// no escaping in JSON (see [`twinhub_core::DeviceId`]), so a batch body takes it as is.
pub(crate) fn push_id(out: &mut Vec<u8>, id: &twinhub_core::MessageId) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(id.device.as_str().as_bytes());
    out.push(b':');
    out.extend_from_slice(digits.format(id.epoch).as_bytes());
    out.push(b':');
    out.extend_from_slice(digits.format(id.seq).as_bytes());
}

/// Standard base64.
pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert_eq!(classify_status(201, None), Outcome::Delivered);
        assert_eq!(
            classify_status(400, None),
            Outcome::Rejected(RejectReason::Malformed)
        );
        assert_eq!(
            classify_status(413, None),
            Outcome::Rejected(RejectReason::TooLarge)
        );
        assert_eq!(
            classify_status(429, Some("3")),
            Outcome::Throttled {
                retry_after: Some(twinhub_core::Duration::from_secs(3))
            }
        );
        assert_eq!(
            classify_status(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Outcome::Throttled { retry_after: None }
        );
        for s in [404, 410, 415, 500, 503, 302] {
            assert_eq!(classify_status(s, None), Outcome::ServerError, "{s}");
        }
    }
}
