//! Memory budget of one producer: two million of them must fit in the simulator.
use twinhub_core::{Config, Producer, RamStore};

#[test]
fn producer_without_arena_fits_in_one_kib() {
    let with_store = size_of::<Producer<RamStore<4096>, &Config>>();
    let arena = 4096;
    let engine = with_store - arena;
    println!("Producer<RamStore<4096>, &Config>: {with_store} bytes, {engine} without the arena");
    assert!(engine <= 1024, "engine state is {engine} bytes");
}
