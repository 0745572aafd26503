//! The device ↔ gateway wire: round trips through a byte stream with line noise, every
//! flipped bit caught, small buffers refused, and a record's line cost within its frame's.

use proptest::prelude::*;
use twinhub_core::Class;
use twinhub_core::wire::{Accumulator, Downlink, Uplink, WireError, decode, encode};

fn roundtrip(msg: &Uplink<'_>) -> Vec<u8> {
    let mut out = vec![0u8; 1024];
    let n = encode(msg, &mut out).unwrap();
    out.truncate(n);
    out
}

#[test]
fn small_buffer_is_an_error_not_a_panic() {
    let msg = Downlink::Ack { epoch: 3, seq: 9 };
    for size in 0..16 {
        let mut out = vec![0u8; size];
        match encode(&msg, &mut out) {
            Ok(n) => assert!(n <= size),
            Err(e) => assert_eq!(e, WireError::BufferTooSmall),
        }
    }
}

#[test]
fn a_flipped_bit_is_caught() {
    let msg = Uplink::Record {
        epoch: 1,
        seq: 2,
        class: Class::Normal,
        payload: b"hello",
    };
    let bytes = roundtrip(&msg);
    for i in 0..bytes.len() - 1 {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            if b[i] == 0 {
                continue; // a zero splits the message: the receiver sees two fragments
            }
            let end = b.len() - 1;
            assert!(
                decode::<Uplink<'_>>(&mut b[..end]).is_err(),
                "flip {i}:{bit}"
            );
        }
    }
}

#[test]
fn accumulator_drops_an_overlong_message_and_resynchronises() {
    let mut acc = Accumulator::<8>::new();
    for _ in 0..20 {
        assert!(acc.push(7).is_none());
    }
    assert_eq!(acc.push(0).unwrap().unwrap_err(), WireError::TooLong);
    let mut out = [0u8; 64];
    let n = encode(&Downlink::Ack { epoch: 1, seq: 1 }, &mut out).unwrap();
    let mut got = None;
    for &b in &out[..n] {
        if let Some(f) = acc.push(b) {
            got = Some(decode::<Downlink>(f.unwrap()).unwrap());
        }
    }
    assert_eq!(got, Some(Downlink::Ack { epoch: 1, seq: 1 }));
}

proptest! {
    #[test]
    fn records_roundtrip_through_a_byte_stream(
        epoch: u32,
        seq: u64,
        class in 0usize..3,
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        garbage in proptest::collection::vec(1u8..=255, 0..40),
    ) {
        let msg = Uplink::Record { epoch, seq, class: Class::ALL[class], payload: &payload };
        let bytes = roundtrip(&msg);
        prop_assert_eq!(*bytes.last().unwrap(), 0);
        prop_assert!(!bytes[..bytes.len() - 1].contains(&0));
        // Line noise before the first zero is one bad message, then the record decodes.
        let mut acc = Accumulator::<512>::new();
        let mut decoded = Vec::new();
        let mut errors = 0;
        for &b in garbage.iter().chain([0u8].iter()).chain(bytes.iter()) {
            if let Some(f) = acc.push(b) {
                match f.and_then(|f| decode::<Uplink<'_>>(f).map(|m| match m {
                    Uplink::Record { seq, payload, .. } => (seq, payload.to_vec()),
                    Uplink::Hello { .. } => (u64::MAX, Vec::new()),
                })) {
                    Ok(m) => decoded.push(m),
                    Err(_) => errors += 1,
                }
            }
        }
        prop_assert_eq!(decoded, vec![(seq, payload.clone())]);
        prop_assert!(errors <= 1);
    }

    #[test]
    fn a_record_costs_no_more_on_the_line_than_its_frame(
        epoch: u32,
        seq: u64,
        class in 0usize..3,
        at: u64,
        payload in proptest::collection::vec(any::<u8>(), 0..=Uplink::BUDGET_EXACT_PAYLOAD),
    ) {
        let class = Class::ALL[class];
        let msg = Uplink::Record { epoch, seq, class, payload: &payload };
        let meta = twinhub_core::RecordMeta { epoch, seq, class, enqueued_at: twinhub_core::Instant::from_millis(at) };
        prop_assert!(roundtrip(&msg).len() <= twinhub_core::frame::encoded_len(&meta, payload.len()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode::<Uplink<'_>>(&mut bytes.clone());
        let _ = decode::<Downlink>(&mut bytes);
    }
}
