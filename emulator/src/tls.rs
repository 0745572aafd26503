//! The per-run certificate authority and the server certificates it signs.
//!
//! Every emulator start makes a fresh CA (never written anywhere but the run's own CA file)
//! and, per IoT Hub endpoint, a server certificate whose subject alternative name is the
//! endpoint's loopback IP address. Clients trust the emulator by adding the CA file, the
//! same way they would add a private CA in production: verification stays on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the TLS material could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Generating a key or a certificate failed.
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The TLS library refused the certificate or its settings.
    #[error("cannot configure TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("cannot configure client certificate verification: {0}")]
    Verifier(String),
    /// The CA file could not be written.
    #[error("cannot write the CA file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

/// A CA made for this run; signs server certificates.
pub(crate) struct RunCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

impl RunCa {
    pub(crate) fn new() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "twinhub emulator CA (this run only)");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(RunCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    /// A device certificate and key (PEM) for X.509 authentication: subject CN = `device`
    /// (what IoT Hub's CA-signed authentication checks), client-auth usage, signed by this
    /// CA. Made per run; nothing outlives the run.
    pub(crate) fn device_cert(&self, device: &str) -> Result<DeviceCert, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, device);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(DeviceCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A rustls server configuration presenting a new certificate for `names` (IP
    /// addresses become IP SANs, anything else DNS SANs), chained to this CA.
    ///
    /// A client may present a certificate (X.509 device authentication); if it does, it
    /// must chain to this CA or the handshake fails. Clients without one (SAS) are let in,
    /// and the CONNECT decides.
    pub(crate) fn server_config(
        &self,
        names: &[String],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().map_or("emulator", |n| n));
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![cert.der().clone(), self.der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        Ok(Arc::new(config))
    }
}

/// A device certificate issued by the run's CA, both halves PEM.
#[derive(Clone)]
pub struct DeviceCert {
    /// The certificate (subject CN = the device id).
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for DeviceCert {
    // The key is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCert").finish_non_exhaustive()
    }
}

/// The subject CN of the certificate the client presented (verified against the run's
/// CA by the handshake), if it presented one.
pub(crate) fn client_common_name(conn: &rustls::ServerConnection) -> Option<String> {
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|c| common_name(c))
}

/// The subject common name of a DER certificate, if it has one.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// The CA file of one run, in a directory of its own that is removed on drop.
#[derive(Debug)]
pub(crate) struct CaFile {
    dir: PathBuf,
    path: PathBuf,
    owned_dir: bool,
    /// Other files of the run in the same directory (device certificates and keys).
    extra: Vec<PathBuf>,
}

impl CaFile {
    /// Writes `pem` to `dir/ca.pem` if `dir` is given (left in place afterwards, only the
    /// file is removed), else to a fresh directory under the system temp dir.
    pub(crate) fn write(pem: &str, dir: Option<&Path>) -> Result<Self, TlsError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (dir, owned_dir) = match dir {
            Some(d) => (d.to_path_buf(), false),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let n = COUNTER.fetch_add(1, Ordering::Relaxed);
                let name = format!("twinhub-emulator-{}-{nanos}-{n}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        let path = dir.join("ca.pem");
        let io = |source| TlsError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::write(&path, pem).map_err(io)?;
        Ok(CaFile {
            dir,
            path,
            owned_dir,
            extra: Vec::new(),
        })
    }

    /// Writes another file of the run (`name` in the CA file's directory), readable by
    /// its owner only (it may be a private key); removed with the CA file.
    pub(crate) fn write_beside(&mut self, name: &str, contents: &str) -> Result<PathBuf, TlsError> {
        let path = self.dir.join(name);
        let io = |source| TlsError::Write {
            path: path.clone(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(io)?;
        std::io::Write::write_all(&mut file, contents.as_bytes()).map_err(io)?;
        self.extra.push(path.clone());
        Ok(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CaFile {
    fn drop(&mut self) {
        // A leftover CA of a finished run is harmless (its key died with the run), so a
        // failed removal is ignored.
        let _ = std::fs::remove_file(&self.path);
        for p in &self.extra {
            let _ = std::fs::remove_file(p);
        }
        if self.owned_dir {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_lives_as_long_as_its_handle() {
        let ca = RunCa::new().unwrap();
        assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
        ca.server_config(&["127.0.0.7".into()]).unwrap();
        let file = CaFile::write(ca.pem(), None).unwrap();
        let path = file.path().to_path_buf();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ca.pem());
        drop(file);
        assert!(!path.exists());
    }
}
