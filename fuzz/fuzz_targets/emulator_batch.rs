#![no_main]
//! The emulator's request-body parsers (Event Hubs batch, generic batch) never panic, and
//! whatever they accept has a body for every event.
use libfuzzer_sys::fuzz_target;
use twinhub_emulator::batch::{parse_event_hubs_batch, parse_generic_batch};

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = parse_event_hubs_batch(data) {
        assert!(!events.is_empty());
    }
    if let Ok(events) = parse_generic_batch(data) {
        assert!(
            events
                .iter()
                .all(|e| e.message_id.as_deref().is_some_and(|id| !id.is_empty()))
        );
    }
});
