#![no_main]
//! The device-gateway serial wire: the accumulator splits any byte stream exactly at its
//! zeros (dropping overlong messages), decoding never panics, and every message that
//! decodes re-encodes to bytes that decode to the same message (and re-encode identically).
//! A small record never costs more bytes on the line than its engine frame.
use libfuzzer_sys::fuzz_target;
use twinhub_core::frame::{self, RecordMeta};
use twinhub_core::wire::{self, Accumulator, Downlink, Uplink, WireError};
use twinhub_core::{Class, Instant};

/// Receive buffer of the accumulator under test.
const N: usize = 512;

/// Encodes `$msg`, checks the framing, decodes the result as `$ty`, checks it equals
/// `$msg`, and checks that encoding it again gives the same bytes.
macro_rules! roundtrip {
    ($msg:expr, $ty:ty, $hint:expr) => {{
        let msg = $msg;
        // A canonical encoding is never longer than the raw bytes it was decoded from;
        // `encode` needs about twice the message as scratch space.
        let mut out = vec![0u8; 2 * $hint + 64];
        let n = wire::encode(&msg, &mut out).expect("a decoded message re-encodes");
        assert_eq!(out[n - 1], 0, "a zero ends every message");
        assert!(!out[..n - 1].contains(&0), "no zero inside a message");
        let first = out[..n].to_vec();
        let back: $ty = wire::decode(&mut out[..n - 1]).expect("re-encoded bytes decode");
        assert_eq!(back, msg);
        let mut again = vec![0u8; 2 * $hint + 64];
        let m = wire::encode(&back, &mut again).expect("re-encodes again");
        assert_eq!(&again[..m], &first[..], "encoding is a fixed point");
    }};
}

/// Runs `bytes` through an accumulator and checks every message against a model that
/// splits at zeros; decodes each complete message both ways.
fn check_stream(bytes: &[u8]) {
    let mut acc = Accumulator::<N>::new();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let got = acc.push(b);
        if b != 0 {
            assert!(got.is_none(), "only a zero ends a message");
            continue;
        }
        let chunk = &bytes[start..i];
        start = i + 1;
        match got {
            None => assert!(
                chunk.is_empty(),
                "a message of {} bytes was lost",
                chunk.len()
            ),
            Some(Err(e)) => {
                assert_eq!(e, WireError::TooLong);
                assert!(
                    chunk.len() > N,
                    "a {}-byte message was refused",
                    chunk.len()
                );
            }
            Some(Ok(frame)) => {
                assert!(chunk.len() <= N, "a message past the buffer was handed out");
                assert_eq!(&frame[..], chunk);
                check_frame(frame);
            }
        }
    }
}

/// Decodes one framed message (without its zero) as either direction.
fn check_frame(frame: &[u8]) {
    let mut buf = frame.to_vec();
    if let Ok(msg) = wire::decode::<Uplink<'_>>(&mut buf) {
        roundtrip!(msg, Uplink<'_>, frame.len());
    }
    let mut buf = frame.to_vec();
    if let Ok(msg) = wire::decode::<Downlink>(&mut buf) {
        roundtrip!(msg, Downlink, frame.len());
    }
}

fuzz_target!(|data: &[u8]| {
    check_stream(data);

    // Also a well-formed record built from the input, damaged at one byte: random bytes
    // rarely get past the checksum, this reaches the decoder behind it.
    let [pos, xor, class, dev_len, rest @ ..] = data else {
        return;
    };
    let (num, rest) = rest.split_at(rest.len().min(12));
    let mut word = [0u8; 12];
    word[..num.len()].copy_from_slice(num);
    let (dev, payload) = rest.split_at(rest.len().min(usize::from(*dev_len % 40)));
    let device = core::str::from_utf8(dev).unwrap_or("sensor-1");
    let msg = if *class & 0x80 != 0 {
        Uplink::Hello { device }
    } else {
        Uplink::Record {
            epoch: u32::from_le_bytes([word[0], word[1], word[2], word[3]]),
            seq: u64::from_le_bytes([
                word[4], word[5], word[6], word[7], word[8], word[9], word[10], word[11],
            ]),
            class: Class::ALL[usize::from(*class % 3)],
            payload,
        }
    };
    roundtrip!(msg, Uplink<'_>, data.len());
    let mut out = vec![0u8; 2 * data.len() + 64];
    let n = wire::encode(&msg, &mut out).expect("encodes");
    if let Uplink::Record {
        epoch,
        seq,
        class,
        payload,
    } = msg
        && payload.len() <= Uplink::BUDGET_EXACT_PAYLOAD
    {
        // The engine charges a link's budget by frame length; the line must not cost more.
        let meta = RecordMeta {
            epoch,
            seq,
            class,
            enqueued_at: Instant::ZERO,
        };
        assert!(
            n <= frame::encoded_len(&meta, payload.len()),
            "{n} bytes on the line"
        );
    }
    let ack = match *xor % 3 {
        0 => Downlink::Identify,
        1 => Downlink::Reject {
            epoch: u32::from(*pos),
            seq: u64::from(*xor),
        },
        _ => Downlink::Ack {
            epoch: u32::from(*pos),
            seq: u64::from(*xor),
        },
    };
    let m = wire::encode(&ack, &mut out[n..]).expect("encodes");
    // Damage one byte of the message (a zero splits it in two); a reply follows.
    out[usize::from(*pos) % n] ^= *xor;
    check_stream(&out[..n + m]);
});
