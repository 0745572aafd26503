//! Memory budget of one producer: two million of them must fit in the simulator.
use twinhub_core::{Config, Engine, RamStore};

#[test]
fn engine_without_arena_fits_in_a_thousand_bytes() {
    let with_store = size_of::<Engine<RamStore<4096>, &Config>>();
    let arena = 4096;
    let engine = with_store - arena;
    println!("Engine<RamStore<4096>, &Config>: {with_store} bytes, {engine} without the arena");
    assert!(engine <= 1000, "engine state is {engine} bytes");
}

#[test]
fn an_engine_sized_for_two_endpoints_and_two_links_is_smaller() {
    let full = size_of::<Engine<RamStore<320>, &Config>>();
    let small = size_of::<Engine<RamStore<320>, &Config, 2, 2>>();
    println!("Engine<RamStore<320>, &Config>: {full} bytes; sized 2x2: {small} bytes");
    // The route table, endpoint and link state scale with the sizing: about 300 bytes.
    assert!(full - small >= 250, "{full} vs {small}");
}
