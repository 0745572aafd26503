//! What the SDK stores as a record's payload, and what transports receive.
//!
//! The engine stores opaque payload bytes. The SDK puts the application's properties in
//! front of the body so they survive the outbox and restarts:
//!
//! ```text
//! 0x00 body...                                  no properties
//! 0x01 postcard(Vec<(String, String)>) body...  with properties
//! ```

use twinhub_core::{Class, MessageId};

/// Application properties: (name, value) pairs.
pub type Properties = Vec<(String, String)>;

/// A record on its way to a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its unique id; consumers dedupe by it.
    pub id: MessageId,
    /// Its class.
    pub class: Class,
    /// Application properties (name, value).
    pub properties: Properties,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// Why stored bytes are not a record envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Empty, or an unknown first byte.
    #[error("record envelope has an unknown tag")]
    BadTag,
    /// The property list does not decode.
    #[error("record envelope properties do not decode")]
    BadProperties,
}

/// Encodes properties and body into the stored payload.
pub fn encode(properties: &[(String, String)], body: &[u8]) -> Vec<u8> {
    if properties.is_empty() {
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(0);
        out.extend_from_slice(body);
        return out;
    }
    let mut out = vec![1u8];
    // Writing into a Vec cannot fail.
    out.extend(postcard::to_stdvec(properties).unwrap_or_default());
    out.extend_from_slice(body);
    out
}

/// Bytes `encode` adds to a body with these properties.
pub fn overhead(properties: &[(String, String)]) -> usize {
    if properties.is_empty() {
        1
    } else {
        1 + postcard::to_stdvec(properties)
            .map(|v| v.len())
            .unwrap_or(0)
    }
}

/// Splits a stored payload into properties and body.
pub fn decode(stored: &[u8]) -> Result<(Properties, &[u8]), EnvelopeError> {
    match stored.split_first() {
        Some((0, body)) => Ok((Vec::new(), body)),
        Some((1, rest)) => {
            let (props, body) = postcard::take_from_bytes::<Properties>(rest)
                .map_err(|_| EnvelopeError::BadProperties)?;
            Ok((props, body))
        }
        _ => Err(EnvelopeError::BadTag),
    }
}

/// Builds the [`Record`] of a frame handed out by the engine.
pub fn from_frame(
    device: &twinhub_core::DeviceId,
    frame: &twinhub_core::Frame<'_>,
) -> Result<Record, EnvelopeError> {
    let (properties, body) = decode(frame.payload)?;
    Ok(Record {
        id: MessageId {
            device: device.clone(),
            epoch: frame.meta.epoch,
            seq: frame.meta.seq,
        },
        class: frame.meta.class,
        properties,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let props = vec![
            ("unit".to_string(), "C".to_string()),
            ("k".into(), "".into()),
        ];
        for p in [vec![], props] {
            let stored = encode(&p, b"21.5");
            assert_eq!(stored.len(), 4 + overhead(&p));
            let (back, body) = decode(&stored).unwrap();
            assert_eq!((back, body), (p, &b"21.5"[..]));
        }
        assert_eq!(decode(&[]), Err(EnvelopeError::BadTag));
        assert_eq!(decode(&[7, 1]), Err(EnvelopeError::BadTag));
        assert_eq!(decode(&[1, 5, 200]), Err(EnvelopeError::BadProperties));
    }
}
