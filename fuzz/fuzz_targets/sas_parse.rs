#![no_main]
//! SAS token parsing and verification never panic on any input.
use libfuzzer_sys::fuzz_target;
use twinhub_core::sas::{ParsedToken, SasKey};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = core::str::from_utf8(data)
        && let Ok(token) = ParsedToken::parse(text)
    {
        let _ = token.verify(&SasKey::Text("key"), 0);
        let mut out = [0u8; 64];
        let _ = token.resource_decoded(&mut out);
    }
});
