//! Client certificates for mutual TLS: IoT Hub's X.509 device authentication and brokers
//! (MQTT, HTTP) that ask for a certificate.
//!
//! A [`ClientCert`] holds a PEM certificate chain (the device's certificate first, then any
//! intermediates) and its PEM private key. Both are checked when it is made, so a missing
//! file, a PEM that does not decode or a key that does not belong to the certificate is a
//! typed [`ClientCertError`] at configuration time, not a failed handshake later.
//! Verification of the server is unaffected: a client certificate only adds the client's
//! half of the handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::spec::Secret;

/// Why a client certificate or its key is not usable. Messages name the file or variable
/// and the problem, never the key's contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientCertError {
    /// A certificate or key file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The environment variable meant to hold the key is not set (or not UTF-8).
    #[error("environment variable `{0}` (the client key) is not set or not UTF-8")]
    KeyEnv(String),
    /// The certificate PEM has no `CERTIFICATE` block, or one does not decode.
    #[error("client certificate from {from} is not usable: {reason}")]
    Certificate {
        /// Where it came from (file path).
        from: String,
        /// What is wrong.
        reason: String,
    },
    /// The key PEM has no private key block, or it does not decode.
    #[error("client key from {from} is not usable: {reason}")]
    Key {
        /// Where it came from (file path or `env NAME`).
        from: String,
        /// What is wrong.
        reason: String,
    },
    /// The key is a valid key, but not the one the certificate was issued for.
    #[error("client key from {key} does not match the certificate from {cert}")]
    Mismatch {
        /// Where the certificate came from.
        cert: String,
        /// Where the key came from.
        key: String,
    },
}

/// A client certificate chain and its private key, both PEM, checked to belong together.
///
/// `Debug` shows where they came from, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCert {
    cert_pem: String,
    key_pem: Secret,
    cert_from: String,
    key_from: String,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert")
            .field("cert", &self.cert_from)
            .field("key", &self.key_from)
            .finish_non_exhaustive()
    }
}

impl ClientCert {
    /// From PEM text: `cert_pem` holds the certificate then any intermediates, `key_pem`
    /// one private key (PKCS#8, PKCS#1 or SEC1). `cert_from` and `key_from` say where they
    /// came from, for messages (for example a path).
    pub fn from_pem(
        cert_pem: impl Into<String>,
        key_pem: Secret,
        cert_from: impl Into<String>,
        key_from: impl Into<String>,
    ) -> Result<Self, ClientCertError> {
        let c = ClientCert {
            cert_pem: cert_pem.into(),
            key_pem,
            cert_from: cert_from.into(),
            key_from: key_from.into(),
        };
        c.certified_key()?;
        Ok(c)
    }

    /// Reads the certificate chain from `cert` and the key from `key` (PEM files).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, ClientCertError> {
        let key_pem = read(key, "key")?;
        Self::from_cert_file(cert, Secret::new(key_pem), key.display().to_string())
    }

    /// Reads the certificate chain from `cert` and takes the key PEM from the environment
    /// variable `var` (for devices whose key is injected by a secret store).
    pub fn from_file_and_env(cert: &Path, var: &str) -> Result<Self, ClientCertError> {
        let key_pem = std::env::var(var).map_err(|_| ClientCertError::KeyEnv(var.into()))?;
        Self::from_cert_file(cert, Secret::new(key_pem), format!("env {var}"))
    }

    /// Reads the certificate chain from `cert`, with a key already in hand.
    pub fn from_cert_file(
        cert: &Path,
        key_pem: Secret,
        key_from: String,
    ) -> Result<Self, ClientCertError> {
        let cert_pem = read(cert, "certificate")?;
        Self::from_pem(cert_pem, key_pem, cert.display().to_string(), key_from)
    }

    /// Where the certificate came from.
    pub fn cert_source(&self) -> &str {
        &self.cert_from
    }

    /// The chain and key as rustls uses them, checked to match.
    pub(crate) fn certified_key(&self) -> Result<Arc<CertifiedKey>, ClientCertError> {
        let cert_err = |reason: String| ClientCertError::Certificate {
            from: self.cert_from.clone(),
            reason,
        };
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(format!("PEM does not decode: {e}")))?;
        if chain.is_empty() {
            return Err(cert_err("no PEM CERTIFICATE block found".into()));
        }
        let key_err = |reason: String| ClientCertError::Key {
            from: self.key_from.clone(),
            reason,
        };
        // The parser's error names the PEM section, never key bytes.
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.expose().as_bytes())
            .map_err(|e| key_err(format!("no private key found or it does not decode: {e}")))?;
        let provider = rustls::crypto::ring::default_provider();
        match CertifiedKey::from_der(chain, key, &provider) {
            Ok(k) => Ok(Arc::new(k)),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(ClientCertError::Mismatch {
                    cert: self.cert_from.clone(),
                    key: self.key_from.clone(),
                })
            }
            Err(e) => Err(key_err(e.to_string())),
        }
    }
}

fn read(path: &Path, what: &'static str) -> Result<String, ClientCertError> {
    std::fs::read_to_string(path).map_err(|source| ClientCertError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Always offers the one configured certificate: the server decides whether it trusts it.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `base` (roots, versions, verification unchanged) presenting `cert` when the server
/// asks for one; `base` itself when there is none.
pub(crate) fn with_client_cert(
    base: &Arc<rustls::ClientConfig>,
    cert: Option<&ClientCert>,
) -> Result<Arc<rustls::ClientConfig>, ClientCertError> {
    let Some(cert) = cert else {
        return Ok(Arc::clone(base));
    };
    let mut config = rustls::ClientConfig::clone(base);
    config.client_auth_cert_resolver = Arc::new(FixedClientCert(cert.certified_key()?));
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_is_accepted_and_debug_hides_the_key() {
        let (cert, key) = pair("d1");
        let c = ClientCert::from_pem(cert, Secret::new(key.clone()), "c.pem", "k.pem").unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("c.pem") && !shown.contains("PRIVATE"),
            "{shown}"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_a_mismatch() {
        let (cert, _) = pair("d1");
        let (_, other_key) = pair("d2");
        let e = ClientCert::from_pem(cert, Secret::new(other_key), "c.pem", "k.pem").unwrap_err();
        assert!(matches!(e, ClientCertError::Mismatch { .. }), "{e}");
    }

    #[test]
    fn bad_pem_is_named() {
        let (cert, key) = pair("d1");
        let e =
            ClientCert::from_pem("hello", Secret::new(key.clone()), "c.pem", "k.pem").unwrap_err();
        assert!(matches!(e, ClientCertError::Certificate { .. }), "{e}");
        let e =
            ClientCert::from_pem(cert.clone(), Secret::new(cert), "c.pem", "k.pem").unwrap_err();
        assert!(matches!(e, ClientCertError::Key { .. }), "{e}");
        assert!(e.to_string().contains("k.pem"), "{e}");
        let e =
            ClientCert::from_files(Path::new("/nonexistent/c.pem"), Path::new("/k")).unwrap_err();
        assert!(matches!(e, ClientCertError::Read { .. }), "{e}");
    }
}
