//! Shared Access Signature (SAS) tokens for Event Hubs and IoT Hub, without allocation.
//!
//! A token is `SharedAccessSignature sr={uri}&sig={sig}&se={expiry}[&skn={key name}]` where
//! `sig = base64(HMAC-SHA256(key, "{uri}\n{expiry}"))`, and both `uri` and `sig` are
//! percent-encoded. The services differ in what the key bytes are:
//!
//! * Event Hubs and Service Bus use the key text exactly as written in the connection string
//!   ([`SasKey::Text`]).
//! * IoT Hub and DPS base64-decode the key first ([`SasKey::Base64`]).
//!
//! The service checks the HMAC over the `sr` text as sent, so [`sign`] signs exactly the
//! encoded string it writes.
//!
//! ```
//! use twinhub_core::sas::{sign, SasKey};
//!
//! let mut buf = [0u8; 256];
//! let token = sign(
//!     "myhub.azure-devices.net/devices/device1",
//!     &SasKey::Base64("cGFzc3dvcmQ="),
//!     None,
//!     1_700_000_000,
//!     &mut buf,
//! )
//! .unwrap();
//! assert_eq!(
//!     token,
//!     "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdevice1\
//!      &sig=fjQTU3UEPgD7JJkqozp1RGD%2BJPrDnL0tUoxpRcwOQ7w%3D&se=1700000000"
//! );
//! ```

use core::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

/// Everything but RFC 3986's unreserved characters is escaped, as the Azure SDKs for Node
/// (`encodeUriComponentStrict`), Java and C do; hex digits are upper case.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Largest key accepted after decoding; real keys are 32 or 64 bytes.
pub const MAX_KEY_BYTES: usize = 128;

/// The signing key and how the service interprets it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SasKey<'a> {
    /// Event Hubs / Service Bus: the UTF-8 bytes of the key text, used as is.
    Text(&'a str),
    /// IoT Hub / DPS: the key text is base64 and is decoded before use.
    Base64(&'a str),
}

impl fmt::Debug for SasKey<'_> {
    // Keys are secrets: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SasKey::Text(_) => f.write_str("SasKey::Text(<redacted>)"),
            SasKey::Base64(_) => f.write_str("SasKey::Base64(<redacted>)"),
        }
    }
}

/// Why a token could not be made or checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SasError {
    /// The base64 key did not decode, or decoded to more than [`MAX_KEY_BYTES`].
    BadKey,
    /// The output buffer is too small for the token.
    BufferTooSmall,
    /// The token text does not start with `SharedAccessSignature ` or lacks a field.
    Malformed(&'static str),
    /// The token's `se` is at or before the time it was checked at.
    Expired {
        /// The token's expiry, seconds since the Unix epoch.
        expiry: u64,
    },
    /// The signature does not match the key.
    BadSignature,
}

impl fmt::Display for SasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SasError::BadKey => f.write_str("SAS key is not valid base64 or is too long"),
            SasError::BufferTooSmall => f.write_str("buffer too small for the SAS token"),
            SasError::Malformed(what) => write!(f, "malformed SAS token: {what}"),
            SasError::Expired { expiry } => write!(f, "SAS token expired at {expiry}"),
            SasError::BadSignature => f.write_str("SAS signature does not match the key"),
        }
    }
}

impl core::error::Error for SasError {}

/// Computes `HMAC-SHA256(key, "{encoded_uri}\n{expiry}")`. `encoded_uri` must be the exact
/// `sr` text that will be sent.
pub fn signature(key: &SasKey<'_>, encoded_uri: &str, expiry: u64) -> Result<[u8; 32], SasError> {
    let mut key_buf = [0u8; MAX_KEY_BYTES];
    let key_bytes: &[u8] = match key {
        SasKey::Text(k) => k.as_bytes(),
        SasKey::Base64(k) => {
            let n = STANDARD
                .decode_slice(k.as_bytes(), &mut key_buf)
                .map_err(|_| SasError::BadKey)?;
            &key_buf[..n]
        }
    };
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key_bytes).map_err(|_| SasError::BadKey)?;
    mac.update(encoded_uri.as_bytes());
    mac.update(b"\n");
    let mut digits = [0u8; 20];
    mac.update(decimal(expiry, &mut digits));
    Ok(mac.finalize().into_bytes().into())
}

/// Writes a token for `resource_uri` (not yet encoded) into `out` and returns it.
///
/// `key_name` is the `skn` field (the authorization rule); IoT Hub device keys have none.
/// `expiry` is seconds since the Unix epoch.
pub fn sign<'o>(
    resource_uri: &str,
    key: &SasKey<'_>,
    key_name: Option<&str>,
    expiry: u64,
    out: &'o mut [u8],
) -> Result<&'o str, SasError> {
    let mut w = SliceWriter { buf: out, len: 0 };
    w.write_str("SharedAccessSignature sr=")
        .map_err(|_| SasError::BufferTooSmall)?;
    let uri_start = w.len;
    write!(w, "{}", utf8_percent_encode(resource_uri, COMPONENT))
        .map_err(|_| SasError::BufferTooSmall)?;
    let uri_end = w.len;
    // Sign the encoded text exactly as written into the token.
    let encoded_uri =
        core::str::from_utf8(&w.buf[uri_start..uri_end]).map_err(|_| SasError::BufferTooSmall)?;
    let mac = signature(key, encoded_uri, expiry)?;
    let mut b64 = [0u8; 44];
    let n = STANDARD
        .encode_slice(mac, &mut b64)
        .map_err(|_| SasError::BufferTooSmall)?;
    let sig = core::str::from_utf8(&b64[..n]).map_err(|_| SasError::BufferTooSmall)?;
    write!(
        w,
        "&sig={}&se={}",
        utf8_percent_encode(sig, COMPONENT),
        expiry
    )
    .map_err(|_| SasError::BufferTooSmall)?;
    if let Some(name) = key_name {
        write!(w, "&skn={}", utf8_percent_encode(name, COMPONENT))
            .map_err(|_| SasError::BufferTooSmall)?;
    }
    let len = w.len;
    core::str::from_utf8(&out[..len]).map_err(|_| SasError::BufferTooSmall)
}

/// The fields of a token as sent (`sr` and `skn` still percent-encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    /// The `sr` field, exactly as sent (percent-encoded).
    pub resource: &'a str,
    /// The `sig` field, percent-encoded base64.
    pub signature: &'a str,
    /// The `se` field: expiry in seconds since the Unix epoch.
    pub expiry: u64,
    /// The `skn` field, if any.
    pub key_name: Option<&'a str>,
}

impl<'a> ParsedToken<'a> {
    /// Parses `SharedAccessSignature k=v&k=v...` in any field order.
    pub fn parse(token: &'a str) -> Result<Self, SasError> {
        let rest = token
            .strip_prefix("SharedAccessSignature ")
            .ok_or(SasError::Malformed(
                "missing `SharedAccessSignature ` prefix",
            ))?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for pair in rest.split('&') {
            let (k, v) = pair
                .split_once('=')
                .ok_or(SasError::Malformed("field without `=`"))?;
            let slot = match k {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => continue, // unknown fields are ignored, as the service does
            };
            if slot.replace(v).is_some() {
                return Err(SasError::Malformed("repeated field"));
            }
        }
        let expiry = se
            .ok_or(SasError::Malformed("missing `se`"))?
            .parse::<u64>()
            .map_err(|_| SasError::Malformed("`se` is not a decimal number"))?;
        Ok(ParsedToken {
            resource: sr.ok_or(SasError::Malformed("missing `sr`"))?,
            signature: sig.ok_or(SasError::Malformed("missing `sig`"))?,
            expiry,
            key_name: skn,
        })
    }

    /// Checks the signature against `key` and the expiry against `now_unix` (seconds).
    pub fn verify(&self, key: &SasKey<'_>, now_unix: u64) -> Result<(), SasError> {
        let expected = signature(key, self.resource, self.expiry)?;
        let mut sig_text = [0u8; 64];
        let mut w = SliceWriter {
            buf: &mut sig_text,
            len: 0,
        };
        for chunk in percent_decode_str(self.signature) {
            w.push(chunk).map_err(|_| SasError::BadSignature)?;
        }
        let sig_len = w.len;
        let mut got = [0u8; 48];
        let n = STANDARD
            .decode_slice(&sig_text[..sig_len], &mut got)
            .map_err(|_| SasError::BadSignature)?;
        // Compare every byte so timing does not reveal how much matched.
        let diff = got[..n]
            .iter()
            .zip(expected.iter())
            .fold((n != 32) as u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(SasError::BadSignature);
        }
        if self.expiry <= now_unix {
            return Err(SasError::Expired {
                expiry: self.expiry,
            });
        }
        Ok(())
    }

    /// The `sr` field percent-decoded into `out`.
    pub fn resource_decoded<'o>(&self, out: &'o mut [u8]) -> Result<&'o str, SasError> {
        let mut w = SliceWriter { buf: out, len: 0 };
        for b in percent_decode_str(self.resource) {
            w.push(b).map_err(|_| SasError::BufferTooSmall)?;
        }
        let len = w.len;
        core::str::from_utf8(&out[..len]).map_err(|_| SasError::Malformed("`sr` is not UTF-8"))
    }
}

fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

struct SliceWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl SliceWriter<'_> {
    fn push(&mut self, b: u8) -> fmt::Result {
        *self.buf.get_mut(self.len).ok_or(fmt::Error)? = b;
        self.len += 1;
        Ok(())
    }
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(mac: [u8; 32]) -> heapless::String<44> {
        let mut out = [0u8; 44];
        let n = STANDARD.encode_slice(mac, &mut out).unwrap();
        heapless::String::try_from(core::str::from_utf8(&out[..n]).unwrap()).unwrap()
    }

    #[test]
    fn kat1_iot_key_is_base64_decoded() {
        // azure-iot-sdk-node common/core/test/_shared_access_signature_test.js
        let mac = signature(&SasKey::Base64("cGFzc3dvcmQ="), "uri", 12345).unwrap();
        assert_eq!(b64(mac), "kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk=");
        let mut buf = [0u8; 128];
        let t = sign(
            "uri",
            &SasKey::Base64("cGFzc3dvcmQ="),
            None,
            12345,
            &mut buf,
        )
        .unwrap();
        assert_eq!(
            t,
            "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345"
        );
    }

    #[test]
    fn kat2_string_to_sign_encoding() {
        // azure-sdk-for-c test_az_iot_hub_client_sas.c: the sr text is the encoded URI.
        let mut buf = [0u8; 256];
        let t = sign(
            "myiothub.azure-devices.net/devices/my_device",
            &SasKey::Text("k"),
            Some("iothubowner"),
            1578941692,
            &mut buf,
        )
        .unwrap();
        let p = ParsedToken::parse(t).unwrap();
        assert_eq!(
            p.resource,
            "myiothub.azure-devices.net%2Fdevices%2Fmy_device"
        );
        assert_eq!(p.expiry, 1578941692);
        assert_eq!(p.key_name, Some("iothubowner"));
        assert!(t.ends_with("&se=1578941692&skn=iothubowner"));
    }

    #[test]
    fn kat3_text_key_hmac() {
        // azure-sdk-for-js hmacSha256.spec.ts: signString("testKey", "testMessage").
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"testKey").unwrap();
        mac.update(b"testMessage");
        assert_eq!(
            b64(mac.finalize().into_bytes().into()),
            "8N7PlLvnGgnE2gFU7+AkSxmAc02cXFkOLlFD5gTuOjo="
        );
    }

    #[test]
    fn derived_event_hubs_vector() {
        let mut buf = [0u8; 256];
        let t = sign(
            "https://mynamespace.servicebus.windows.net/myhub",
            &SasKey::Text("testKey"),
            Some("RootManageSharedAccessKey"),
            1_700_000_000,
            &mut buf,
        )
        .unwrap();
        assert_eq!(
            t,
            "SharedAccessSignature sr=https%3A%2F%2Fmynamespace.servicebus.windows.net%2Fmyhub\
             &sig=rpVtH%2B4nwENa1FHOzTHGROeuZ3GChZNx8b5ZJbiKECs%3D&se=1700000000\
             &skn=RootManageSharedAccessKey"
        );
    }

    #[test]
    fn verify_accepts_own_tokens_and_rejects_others() {
        let mut buf = [0u8; 256];
        let key = SasKey::Text("secret");
        let t = sign("sb://ns.example/hub", &key, Some("send"), 2000, &mut buf).unwrap();
        let p = ParsedToken::parse(t).unwrap();
        assert_eq!(p.verify(&key, 1999), Ok(()));
        assert_eq!(
            p.verify(&key, 2000),
            Err(SasError::Expired { expiry: 2000 })
        );
        assert_eq!(
            p.verify(&SasKey::Text("other"), 1999),
            Err(SasError::BadSignature)
        );
        let mut out = [0u8; 64];
        assert_eq!(p.resource_decoded(&mut out).unwrap(), "sb://ns.example/hub");
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let mut small = [0u8; 10];
        assert_eq!(
            sign("uri", &SasKey::Text("k"), None, 1, &mut small),
            Err(SasError::BufferTooSmall)
        );
        let mut buf = [0u8; 256];
        assert_eq!(
            sign("uri", &SasKey::Base64("not base64!"), None, 1, &mut buf),
            Err(SasError::BadKey)
        );
        assert!(matches!(
            ParsedToken::parse("Bearer x"),
            Err(SasError::Malformed(_))
        ));
        assert!(matches!(
            ParsedToken::parse("SharedAccessSignature sr=a&sig=b"),
            Err(SasError::Malformed(_))
        ));
        assert!(matches!(
            ParsedToken::parse("SharedAccessSignature sr=a&sig=b&se=x"),
            Err(SasError::Malformed(_))
        ));
    }

    #[test]
    fn key_debug_is_redacted() {
        use core::fmt::Write as _;
        let mut s = heapless::String::<64>::new();
        write!(s, "{:?}", SasKey::Text("supersecret")).unwrap();
        assert!(!s.contains("supersecret"));
    }
}
