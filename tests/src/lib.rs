//! twinhub's end-to-end suites (in `tests/`) and the reliability runner they share with
//! `cargo xtask chaos | soak`: real brokers, emulator regions and `twinhub` processes,
//! killed, starved of disk and cut mid-write; and the harness of the firmware suites,
//! which boot the firmware images in QEMU behind `twinhub gateway` ([`firmware`]). None of
//! this is part of a product crate.

pub mod chaos;
pub mod firmware;
