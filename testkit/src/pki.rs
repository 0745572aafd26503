//! A private PKI made per test run, for mutual TLS tests: a CA, a server certificate for
//! `localhost` and 127.0.0.1, a client certificate it issued, and a client certificate of
//! another CA that no server here trusts. Nothing is ever written outside the run's own
//! temporary directory, which goes away with the [`TestPki`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// The files of a run's PKI (all PEM): see the module docs.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert, Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: Vec<String>,
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

impl TestPki {
    /// Makes the PKI; the client certificate's subject CN is `client_cn`. Panics if it
    /// cannot (tests).
    pub fn new(client_cn: &str) -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_cert, issuer) = ca("twinhub test CA");
        let server = leaf(
            &issuer,
            vec!["localhost".into(), "127.0.0.1".into()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            &issuer,
            Vec::new(),
            client_cn,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (_, stranger) = ca("a CA nobody here trusts");
        let foreign = leaf(
            &stranger,
            Vec::new(),
            client_cn,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let files = [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", server.0),
            ("server.key", server.1),
            ("client.pem", client.0),
            ("client.key", client.1),
            ("foreign.pem", foreign.0),
            ("foreign.key", foreign.1),
        ];
        for (name, pem) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            // mosquitto started as root reads them as its own user.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        TestPki { dir }
    }

    /// A file of the PKI by name: `ca.pem`, `server.pem`, `server.key`, `client.pem`,
    /// `client.key`, `foreign.pem`, `foreign.key`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// mosquitto listener lines for TLS that requires a client certificate from this CA.
    pub fn mosquitto_mutual_tls(&self) -> String {
        format!(
            "allow_anonymous true\ncafile {0}/ca.pem\ncertfile {0}/server.pem\n\
             keyfile {0}/server.key\nrequire_certificate true\n",
            self.dir.path().display()
        )
    }
}
