//! SASL PLAIN (RFC 4616) and SCRAM-SHA-256/512 (RFC 5802, RFC 7677) client messages, as
//! Kafka carries them in SaslAuthenticate.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

pub(crate) use crate::spec::SaslMechanism as Mechanism;

/// Why a SASL exchange failed on our side (the broker's own refusal is an error code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SaslError {
    /// The server's message is not what the mechanism expects.
    #[error("SCRAM server message malformed: {0}")]
    Malformed(&'static str),
    /// The server did not prove it knows the password (or its nonce does not extend ours).
    #[error("SCRAM server could not be verified")]
    ServerNotVerified,
}

/// `\0user\0password`.
pub(crate) fn plain(user: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(user.len() + password.len() + 2);
    out.push(0);
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

fn hmac(m: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match m {
        Mechanism::ScramSha512 => {
            let Ok(mut mac) = <Hmac<Sha512> as KeyInit>::new_from_slice(key) else {
                return Vec::new(); // HMAC takes keys of any length; not reached
            };
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        _ => {
            let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
                return Vec::new();
            };
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(m: Mechanism, data: &[u8]) -> Vec<u8> {
    match m {
        Mechanism::ScramSha512 => Sha512::digest(data).to_vec(),
        _ => Sha256::digest(data).to_vec(),
    }
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// `saslname`: `=` and `,` escaped as RFC 5802 requires.
fn escape_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// One SCRAM exchange, client side.
pub(crate) struct Scram {
    mechanism: Mechanism,
    nonce: String,
    first_bare: String,
    server_signature: Vec<u8>,
}

impl Scram {
    /// Starts an exchange with a client nonce (printable, without `,`).
    pub(crate) fn new(mechanism: Mechanism, user: &str, nonce: String) -> Self {
        let first_bare = format!("n={},r={nonce}", escape_name(user));
        Scram {
            mechanism,
            nonce,
            first_bare,
            server_signature: Vec::new(),
        }
    }

    /// A fresh random nonce: 18 bytes from the OS generator, base64.
    pub(crate) fn random_nonce() -> Result<String, getrandom::Error> {
        let mut b = [0u8; 18];
        getrandom::fill(&mut b)?;
        Ok(b64().encode(b))
    }

    /// `client-first-message`: no channel binding (`n,,`).
    pub(crate) fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// Answers `server-first-message` with `client-final-message`.
    ///
    /// The password is used as given (ASCII passwords are unchanged by SASLprep; others
    /// must already be normalised).
    pub(crate) fn client_final(
        &mut self,
        server_first: &[u8],
        password: &str,
    ) -> Result<Vec<u8>, SaslError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in text.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("m", _)) => return Err(SaslError::Malformed("mandatory extension")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or(SaslError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(SaslError::ServerNotVerified);
        }
        let salt = b64()
            .decode(salt.ok_or(SaslError::Malformed("no salt"))?)
            .map_err(|_| SaslError::Malformed("salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or(SaslError::Malformed("no iteration count"))?
            .parse()
            .map_err(|_| SaslError::Malformed("iteration count"))?;
        // Kafka's minimum is 4096; an absurd count would stall the sender for minutes.
        if !(1..=1_000_000).contains(&iterations) {
            return Err(SaslError::Malformed("iteration count out of range"));
        }
        let m = self.mechanism;
        // Hi(): PBKDF2 with HMAC, one block.
        let mut block = salt.clone();
        block.extend_from_slice(&1u32.to_be_bytes());
        let mut u = hmac(m, password.as_bytes(), &block);
        let mut salted = u.clone();
        for _ in 1..iterations {
            u = hmac(m, password.as_bytes(), &u);
            for (s, x) in salted.iter_mut().zip(&u) {
                *s ^= x;
            }
        }
        let client_key = hmac(m, &salted, b"Client Key");
        let stored_key = hash(m, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let client_signature = hmac(m, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(m, &salted, b"Server Key");
        self.server_signature = hmac(m, &server_key, auth_message.as_bytes());
        Ok(format!("{without_proof},p={}", b64().encode(proof)).into_bytes())
    }

    /// Checks `server-final-message`: the server must prove it knows the password too.
    pub(crate) fn verify_server(&self, server_final: &[u8]) -> Result<(), SaslError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let v = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or(SaslError::ServerNotVerified)?;
        let v = b64().decode(v).map_err(|_| SaslError::ServerNotVerified)?;
        if self.server_signature.is_empty() || v != self.server_signature {
            return Err(SaslError::ServerNotVerified);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message() {
        assert_eq!(plain("$ConnectionString", "pw"), b"\0$ConnectionString\0pw");
    }

    /// RFC 7677 section 3's example exchange.
    #[test]
    fn scram_sha256_rfc7677() {
        let mut s = Scram::new(
            Mechanism::ScramSha256,
            "user",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(s.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = s.client_final(server_first, "pencil").unwrap();
        assert_eq!(
            std::str::from_utf8(&fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        s.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert_eq!(
            s.verify_server(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(SaslError::ServerNotVerified)
        );
    }

    /// RFC 7677's exchange with SHA-512, which no RFC gives vectors for: the expected
    /// messages were computed with Python's `hashlib.pbkdf2_hmac` and `hmac`, an
    /// implementation independent of this one that reproduces RFC 7677's SHA-256 proof.
    /// (RFC 5802's own example is SCRAM-SHA-1, which Kafka does not offer.)
    #[test]
    fn scram_sha512_matches_an_independent_implementation() {
        let mut s = Scram::new(
            Mechanism::ScramSha512,
            "user",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = s.client_final(server_first, "pencil").unwrap();
        assert_eq!(
            std::str::from_utf8(&fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ=="
        );
        s.verify_server(
            b"v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw==",
        )
        .unwrap();
        // The SHA-256 server signature of the same exchange does not pass for SHA-512.
        assert_eq!(
            s.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(SaslError::ServerNotVerified)
        );
    }

    /// A wrong password gives a different proof, and the real server's signature no
    /// longer verifies: the exchange cannot pass with the wrong secret on either side.
    #[test]
    fn scram_with_the_wrong_password_neither_proves_nor_verifies() {
        let mut s = Scram::new(
            Mechanism::ScramSha256,
            "user",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = s.client_final(server_first, "pencils").unwrap();
        assert!(!fin.ends_with(b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="));
        assert_eq!(
            s.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(SaslError::ServerNotVerified)
        );
    }

    #[test]
    fn scram_refuses_a_server_that_does_not_extend_our_nonce() {
        let mut s = Scram::new(Mechanism::ScramSha512, "a=b,c", "abc".into());
        assert_eq!(s.client_first(), b"n,,n=a=3Db=2Cc,r=abc");
        assert_eq!(
            s.client_final(b"r=xyz123,s=AAAA,i=4096", "pw"),
            Err(SaslError::ServerNotVerified)
        );
        assert!(s.client_final(b"r=abcdef,s=AAAA,i=0", "pw").is_err());
        assert!(s.client_final(b"r=abcdef,s=AAAA", "pw").is_err());
        assert!(s.client_final(b"r=abcdef,s=AAAA,i=4096", "pw").is_ok());
        let fin = s.client_final(b"r=abcdef,s=AAAA,i=4096", "pw").unwrap();
        assert!(fin.starts_with(b"c=biws,r=abcdef,p="));
    }
}
