#![no_main]
//! Frame decoding never panics, and whatever it accepts re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;
use twinhub_core::frame::{self, Frames};

fuzz_target!(|data: &[u8]| {
    if let Ok((f, n)) = frame::decode(data) {
        let mut out = vec![0u8; n];
        let m = frame::encode(&f.meta, f.payload, &mut out).expect("an accepted frame re-encodes");
        assert_eq!(&out[..m], &data[..n]);
    }
    let _ = frame::decode_trusted(data);
    for f in Frames::new(data) {
        if f.is_err() {
            break;
        }
    }
});
