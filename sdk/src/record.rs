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
    /// The body bytes. A transmit's records share one buffer, so cloning a body (as a
    /// transport handing it to its client does) copies nothing.
    pub body: bytes::Bytes,
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
    let mut out = Vec::with_capacity(body.len() + 1);
    encode_into(properties, body, &mut out);
    out
}

/// Encodes properties and body into `out` (cleared first), so a caller can reuse one
/// buffer for every record.
pub fn encode_into(properties: &[(String, String)], body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if properties.is_empty() {
        out.push(0);
    } else {
        out.push(1);
        // Writing into a Vec cannot fail.
        out.extend(postcard::to_stdvec(properties).unwrap_or_default());
    }
    out.extend_from_slice(body);
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

/// Builds the [`Record`] of a frame handed out by the engine (its body copied).
pub fn from_frame(
    device: &twinhub_core::DeviceId,
    frame: &twinhub_core::Frame<'_>,
) -> Result<Record, EnvelopeError> {
    let (properties, body) = decode(frame.payload)?;
    Ok(record(
        device,
        frame,
        properties,
        bytes::Bytes::copy_from_slice(body),
    ))
}

fn record(
    device: &twinhub_core::DeviceId,
    frame: &twinhub_core::Frame<'_>,
    properties: Properties,
    body: bytes::Bytes,
) -> Record {
    Record {
        id: MessageId {
            device: device.clone(),
            epoch: frame.meta.epoch,
            seq: frame.meta.seq,
        },
        class: frame.meta.class,
        properties,
        body,
    }
}

/// Why a transmit's frames are not records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransmitError {
    /// A frame does not decode.
    #[error("stored frame does not decode: {0}")]
    Frame(twinhub_core::FrameError),
    /// A payload is not a record envelope.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// The records of a transmit's frames. `frames` is copied once and the records' bodies
/// are slices of that copy: one allocation per transmit rather than one per record.
pub fn from_frames(
    device: &twinhub_core::DeviceId,
    frames: &[u8],
) -> Result<Vec<Record>, TransmitError> {
    let owner = bytes::Bytes::copy_from_slice(frames);
    // Most transmits are a full batch: room for one without growing (a guess, not a cap).
    let mut records = Vec::with_capacity(64);
    for frame in twinhub_core::frame::Frames::new(&owner) {
        let frame = frame.map_err(TransmitError::Frame)?;
        let (properties, body) = decode(frame.payload)?;
        // `body` lies inside `owner`, which the frames were read from.
        let body = owner.slice_ref(body);
        records.push(record(device, &frame, properties, body));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinhub_core::frame::{self, RecordMeta};
    use twinhub_core::{DeviceId, Instant};

    /// Frames back to back, as a transmit hands them out.
    fn transmit(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, p) in payloads.iter().enumerate() {
            let meta = RecordMeta {
                epoch: 2,
                seq: seq as u64,
                class: Class::Critical,
                enqueued_at: Instant::ZERO,
            };
            let start = out.len();
            out.resize(start + frame::encoded_len(&meta, p.len()), 0);
            frame::encode(&meta, p, &mut out[start..]).unwrap();
        }
        out
    }

    #[test]
    fn a_transmits_records_share_one_copy_and_match_one_by_one_decoding() {
        let device = DeviceId::new("dev-1").unwrap();
        let props = vec![("unit".to_string(), "C".to_string())];
        let payloads = vec![
            encode(&[], b"first"),
            encode(&props, b"second"),
            encode(&[], b""),
        ];
        let bytes = transmit(&payloads);
        let records = from_frames(&device, &bytes).unwrap();
        let one_by_one: Vec<Record> = frame::Frames::new(&bytes)
            .map(|f| from_frame(&device, &f.unwrap()).unwrap())
            .collect();
        assert_eq!(records, one_by_one);
        assert_eq!(records[1].properties, props);
        assert_eq!(&records[1].body[..], b"second");
        assert_eq!(records[2].id.to_string(), "dev-1:2:2");
        // The bodies are views of one buffer, in order, inside it.
        let (a, b) = (
            records[0].body.as_ptr() as usize,
            records[1].body.as_ptr() as usize,
        );
        assert!(a < b && b - a < bytes.len());
    }

    #[test]
    fn a_bad_frame_or_envelope_is_an_error_not_a_panic() {
        let device = DeviceId::new("dev-1").unwrap();
        let mut bytes = transmit(&[encode(&[], b"ok"), encode(&[], b"rotten")]);
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        assert!(matches!(
            from_frames(&device, &bytes),
            Err(TransmitError::Frame(_))
        ));
        let bytes = transmit(&[vec![9, 1, 2]]);
        assert_eq!(
            from_frames(&device, &bytes),
            Err(TransmitError::Envelope(EnvelopeError::BadTag))
        );
    }

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
