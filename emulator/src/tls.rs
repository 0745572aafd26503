//! The per-run certificate authority and the server certificates it signs.
//!
//! Every emulator start makes a fresh CA (never written anywhere but the run's own CA file)
//! and, per IoT Hub endpoint, a server certificate whose subject alternative name is the
//! endpoint's loopback IP address. Clients trust the emulator by adding the CA file, the
//! same way they would add a private CA in production: verification stays on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
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

    /// A rustls server configuration presenting a new certificate for `names` (IP
    /// addresses become IP SANs, anything else DNS SANs), chained to this CA.
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
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Arc::new(config))
    }
}

/// The CA file of one run, in a directory of its own that is removed on drop.
#[derive(Debug)]
pub(crate) struct CaFile {
    dir: PathBuf,
    path: PathBuf,
    owned_dir: bool,
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
        })
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
