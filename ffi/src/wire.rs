//! The device ↔ gateway serial wire for C firmware: the same bytes as `twinhub_core::wire`.
//!
//! A device says hello (its id) when a line comes up and whenever the gateway asks, then
//! sends each record of a transmit; the gateway answers each record with an ack (durable,
//! the device may forget it) or a reject (never acceptable). Every message is
//! `COBS(postcard(message) ‖ CRC-32C) ‖ 0x00`, so a receiver that joins mid-stream or
//! loses bytes resynchronises at the next zero.

use core::ffi::c_char;

use twinhub_core::id::MAX_DEVICE_ID;
use twinhub_core::wire::{self, Downlink, Uplink, WireError};

use crate::producer::twinhub_record;
use crate::types::*;

/// Bytes that encoding needs for `msg`: the raw message and checksum, plus the room its
/// COBS form is built in (the encoder uses the output buffer as scratch).
fn needed(msg: &Uplink<'_>) -> usize {
    let body = postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
        .unwrap_or(usize::MAX);
    let raw = body.saturating_add(4);
    raw.saturating_add(cobs::max_encoding_length(raw))
        .saturating_add(1)
}

/// Encodes `msg` into `out`; `*len_out` gets the bytes written, or on
/// `TWINHUB_ERR_BUFFER_TOO_SMALL` the size `out` needs.
///
/// # Safety
///
/// `out` is valid for `out_len` writable bytes; `len_out` is NULL or writable.
unsafe fn encode(msg: &Uplink<'_>, out: *mut u8, out_len: usize, len_out: *mut usize) -> Status {
    // SAFETY: the caller's contract.
    let buf = unsafe { bytes_mut(out, out_len) }?;
    match wire::encode(msg, buf) {
        Ok(n) => {
            // SAFETY: the caller's contract.
            unsafe { put_req(len_out, n) }
        }
        Err(_) => {
            // SAFETY: the caller's contract.
            unsafe { put(len_out, needed(msg)) };
            Err(TWINHUB_ERR_BUFFER_TOO_SMALL)
        }
    }
}

/// Encodes the hello that names the device on a line (`device_id`, NUL-terminated) into
/// `out`, with its terminating zero. `*len_out` gets the bytes to send, or on
/// `TWINHUB_ERR_BUFFER_TOO_SMALL` the size `out` needs. Send it when a line comes up and
/// whenever the gateway asks (`TWINHUB_DOWNLINK_IDENTIFY`). May be called from an interrupt.
///
/// # Safety
///
/// `device_id` is NULL or NUL-terminated; `out` is valid for `out_len` writable bytes;
/// `len_out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_wire_hello(
    device_id: *const c_char,
    out: *mut u8,
    out_len: usize,
    len_out: *mut usize,
) -> twinhub_result {
    status((|| {
        // SAFETY: the caller's contract.
        let device = unsafe { text(device_id, MAX_DEVICE_ID) }?;
        // SAFETY: the caller's contract.
        unsafe { encode(&Uplink::Hello { device }, out, out_len, len_out) }
    })())
}

/// Encodes one record of a transmit (from `twinhub_transmit_record`) as the message that
/// carries it to the gateway, into `out` with its terminating zero. `*len_out` gets the
/// bytes to send, or on `TWINHUB_ERR_BUFFER_TOO_SMALL` the size `out` needs (about twice
/// the payload plus 32). May be called from an interrupt.
///
/// # Safety
///
/// `record` is NULL or readable, its `payload` valid for `payload_len` bytes; `out` is
/// valid for `out_len` writable bytes (not overlapping the payload); `len_out` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_wire_record(
    record: *const twinhub_record,
    out: *mut u8,
    out_len: usize,
    len_out: *mut usize,
) -> twinhub_result {
    status((|| {
        // SAFETY: the caller's contract.
        let r = unsafe { arg(record) }?;
        let class = r.record_class.get()?;
        // SAFETY: the caller's contract.
        let payload = unsafe { bytes(r.payload, r.payload_len) }?;
        let msg = Uplink::Record {
            epoch: r.key.epoch,
            seq: r.key.seq,
            class,
            payload,
        };
        // SAFETY: the caller's contract.
        unsafe { encode(&msg, out, out_len, len_out) }
    })())
}

/// `uint64_t` words of a [`twinhub_wire_rx`].
pub const TWINHUB_WIRE_RX_WORDS: usize = 6;
/// Bytes of a [`twinhub_wire_rx`].
pub const TWINHUB_WIRE_RX_SIZE: usize = TWINHUB_WIRE_RX_WORDS * 8;

/// A receiver that collects a line's bytes into messages, in a buffer the caller provides:
/// caller-owned storage, opaque. One per line.
#[repr(C)]
pub struct twinhub_wire_rx {
    _opaque: [u64; TWINHUB_WIRE_RX_WORDS],
}

const RX_MAGIC: u32 = 0x7457_5258; // "tWRX"

struct Rx {
    magic: u32,
    overflow: u32,
    buf: *mut u8,
    cap: usize,
    len: usize,
}

const _: () = assert!(
    size_of::<Rx>() <= size_of::<twinhub_wire_rx>()
        && align_of::<Rx>() <= align_of::<twinhub_wire_rx>(),
    "TWINHUB_WIRE_RX_SIZE is too small on this target"
);

/// What the gateway said.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum twinhub_downlink_kind {
    /// Record `key` is in the gateway's durable outbox: the device may forget it.
    TWINHUB_DOWNLINK_ACK = 0,
    /// The gateway can never accept record `key`: drop it rather than resend it.
    TWINHUB_DOWNLINK_REJECT = 1,
    /// The gateway does not know who is on this line: send the hello again.
    TWINHUB_DOWNLINK_IDENTIFY = 2,
}

/// A message from the gateway.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct twinhub_downlink {
    /// What it says.
    pub kind: twinhub_downlink_kind,
    /// The record it is about (ack and reject).
    pub key: twinhub_record_key,
}

/// Starts a receiver over `buf` (`cap` bytes, kept by the receiver until it is
/// re-initialised: the caller keeps it valid and does not use it meanwhile). Messages
/// longer than `cap` are dropped; the gateway's answers need 32 bytes.
///
/// # Safety
///
/// `rx` is NULL or points to `TWINHUB_WIRE_RX_SIZE` writable bytes aligned as
/// `twinhub_wire_rx`; `buf` is valid for `cap` writable bytes while the receiver is used.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_wire_rx_init(
    rx: *mut twinhub_wire_rx,
    buf: *mut u8,
    cap: usize,
) -> twinhub_result {
    let slot = rx.cast::<Rx>();
    if slot.is_null() || buf.is_null() {
        return TWINHUB_ERR_NULL_POINTER;
    }
    if !slot.is_aligned() || cap == 0 || cap > isize::MAX as usize {
        return TWINHUB_ERR_INVALID_ARGUMENT;
    }
    // SAFETY: aligned, not NULL and large enough (the caller's contract and the assert);
    // `write` does not read the old bytes.
    unsafe {
        slot.write(Rx {
            magic: RX_MAGIC,
            overflow: 0,
            buf,
            cap,
            len: 0,
        })
    };
    TWINHUB_OK
}

/// Feeds one received byte. Returns `TWINHUB_NONE` mid-message, `TWINHUB_OK` with
/// `*msg` filled when the byte completed a message, or a `TWINHUB_ERR_WIRE_*` status when it
/// completed one that was damaged (too long, bad framing or checksum, unknown: it is
/// dropped and the receiver goes on with the next). Call it from the main loop, not from
/// the UART interrupt (which should only queue bytes).
///
/// # Safety
///
/// `rx` is NULL or a receiver's storage; `msg` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn twinhub_wire_rx_push(
    rx: *mut twinhub_wire_rx,
    byte: u8,
    msg: *mut twinhub_downlink,
) -> twinhub_result {
    let slot = rx.cast::<Rx>();
    if slot.is_null() || msg.is_null() {
        return TWINHUB_ERR_NULL_POINTER;
    }
    if !slot.is_aligned() {
        return TWINHUB_ERR_INVALID_ARGUMENT;
    }
    // SAFETY: aligned and not NULL; the magic word is read on its own first.
    if unsafe { core::ptr::addr_of!((*slot).magic).read() } != RX_MAGIC {
        return TWINHUB_ERR_NOT_INITIALIZED;
    }
    // SAFETY: the magic word says `twinhub_wire_rx_init` wrote a whole `Rx` here.
    let rx = unsafe { &mut *slot };
    // SAFETY: the buffer given at init, valid and the receiver's alone (the init contract).
    let buf = unsafe { core::slice::from_raw_parts_mut(rx.buf, rx.cap) };
    if byte != 0 {
        match buf.get_mut(rx.len) {
            Some(b) if rx.overflow == 0 => {
                *b = byte;
                rx.len = rx.len.saturating_add(1);
            }
            _ => rx.overflow = 1,
        }
        return TWINHUB_NONE;
    }
    let len = core::mem::take(&mut rx.len);
    if core::mem::take(&mut rx.overflow) != 0 {
        return TWINHUB_ERR_WIRE_TOO_LONG;
    }
    let Some(frame) = buf.get_mut(..len).filter(|f| !f.is_empty()) else {
        return TWINHUB_NONE; // two zeros in a row: no message
    };
    let out = match wire::decode::<Downlink>(frame) {
        Ok(Downlink::Ack { epoch, seq }) => twinhub_downlink {
            kind: twinhub_downlink_kind::TWINHUB_DOWNLINK_ACK,
            key: twinhub_record_key { epoch, seq },
        },
        Ok(Downlink::Reject { epoch, seq }) => twinhub_downlink {
            kind: twinhub_downlink_kind::TWINHUB_DOWNLINK_REJECT,
            key: twinhub_record_key { epoch, seq },
        },
        Ok(Downlink::Identify) => twinhub_downlink {
            kind: twinhub_downlink_kind::TWINHUB_DOWNLINK_IDENTIFY,
            key: twinhub_record_key::default(),
        },
        Err(WireError::Crc) => return TWINHUB_ERR_WIRE_CRC,
        Err(WireError::Decode) => return TWINHUB_ERR_WIRE_DECODE,
        Err(WireError::TooLong) => return TWINHUB_ERR_WIRE_TOO_LONG,
        Err(_) => return TWINHUB_ERR_WIRE_FRAMING,
    };
    // SAFETY: the caller's contract; not NULL.
    unsafe { msg.write(out) };
    TWINHUB_OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinhub_core::Class;

    #[test]
    fn records_encode_as_the_rust_wire_and_answers_decode() {
        let payload = *b"21.5C";
        let rec = twinhub_record {
            key: twinhub_record_key { epoch: 3, seq: 42 },
            enqueued_at_ms: 0,
            payload: payload.as_ptr(),
            payload_len: payload.len(),
            record_class: RawClass(0),
        };
        let mut out = [0u8; 64];
        let mut n = 0usize;
        unsafe {
            assert_eq!(
                twinhub_wire_record(&rec, out.as_mut_ptr(), 8, &mut n),
                TWINHUB_ERR_BUFFER_TOO_SMALL
            );
            let need = n;
            assert_eq!(
                twinhub_wire_record(&rec, out.as_mut_ptr(), need, &mut n),
                TWINHUB_OK,
                "the size reported is enough"
            );
            assert_eq!(
                twinhub_wire_record(&rec, out.as_mut_ptr(), need - 1, &mut n),
                TWINHUB_ERR_BUFFER_TOO_SMALL
            );
            assert_eq!(
                twinhub_wire_record(&rec, out.as_mut_ptr(), out.len(), &mut n),
                TWINHUB_OK
            );
        }
        let mut rust = [0u8; 64];
        let want = Uplink::Record {
            epoch: 3,
            seq: 42,
            class: Class::Critical,
            payload: b"21.5C",
        };
        let m = wire::encode(&want, &mut rust).unwrap();
        assert_eq!(
            &out[..n],
            &rust[..m],
            "byte for byte the Rust firmware's message"
        );

        let mut rx = twinhub_wire_rx { _opaque: [0; 6] };
        let mut buf = [0u8; 32];
        let mut msg = twinhub_downlink {
            kind: twinhub_downlink_kind::TWINHUB_DOWNLINK_IDENTIFY,
            key: twinhub_record_key::default(),
        };
        unsafe {
            assert_eq!(
                twinhub_wire_rx_push(&mut rx, 1, &mut msg),
                TWINHUB_ERR_NOT_INITIALIZED
            );
            assert_eq!(
                twinhub_wire_rx_init(&mut rx, buf.as_mut_ptr(), buf.len()),
                TWINHUB_OK
            );
        }
        let mut line = [0u8; 64];
        let mut len = 0;
        for d in [
            Downlink::Ack { epoch: 3, seq: 42 },
            Downlink::Identify,
            Downlink::Reject { epoch: 3, seq: 7 },
        ] {
            len += wire::encode(&d, &mut line[len..]).unwrap();
        }
        line[3] ^= 0x40; // corrupt the first message
        let mut got = Vec::new();
        for &b in &line[..len] {
            match unsafe { twinhub_wire_rx_push(&mut rx, b, &mut msg) } {
                TWINHUB_NONE => {}
                TWINHUB_OK => got.push(Ok(msg)),
                e => got.push(Err(e)),
            }
        }
        assert_eq!(got.len(), 3);
        assert!(got[0].is_err(), "{got:?}");
        assert_eq!(
            got[1].unwrap().kind,
            twinhub_downlink_kind::TWINHUB_DOWNLINK_IDENTIFY
        );
        assert_eq!(
            got[2].unwrap(),
            twinhub_downlink {
                kind: twinhub_downlink_kind::TWINHUB_DOWNLINK_REJECT,
                key: twinhub_record_key { epoch: 3, seq: 7 }
            }
        );
    }

    extern crate std;
    use std::vec::Vec;
}
