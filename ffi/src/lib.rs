//! twinhub-ffi: the twinhub engine behind a C API, for C firmware.
//!
//! The shape is the one C firmware expects from Azure's Embedded C SDK and coreMQTT:
//!
//! - no allocation: the producer, its configuration and the wire receiver live in memory
//!   the caller provides (sized opaque structs, typically `static`);
//! - time comes in as `uint64_t now_ms`, from any monotonic millisecond clock;
//! - configuration is built by calls that each return a [`twinhub_result`];
//! - the outbox is a table of C callbacks ([`twinhub_store`]) with a `void *userdata`, so
//!   a team can keep records in its own flash; it is adapted here to the engine's
//!   [`Store`](twinhub_core::Store) and [`Persist`](twinhub_core::Persist) traits;
//! - outcomes and events are C enums carried as fixed-width integers (`uint32_t`), so the
//!   ABI does not depend on a compiler's enum size (`-fshort-enums`);
//! - every error is a status: null pointers, misaligned or uninitialised storage, values
//!   outside an enum and re-entry from a callback are refused, never a crash.
//!
//! The header `include/twinhub.h` is generated from this crate by cbindgen
//! (`cargo xtask header`) and committed; `cargo xtask test` fails when they differ.
//!
//! # Building the C library
//!
//! ```text
//! cargo build -p twinhub-ffi --profile ffi --no-default-features                  # host
//! cargo build -p twinhub-ffi --profile ffi --no-default-features \
//!     --features compact-crc --target thumbv7em-none-eabihf                     # Cortex-M4F
//! ```
//!
//! The `ffi` profile (workspace root) is release with `panic = "abort"`: a `no_std` static
//! library has no unwinder. Without the default `std` feature the library brings its own
//! panic handler, which stops the program with an undefined instruction (a HardFault on
//! Cortex-M, `SIGILL` on a host). This crate's own code cannot panic: its lints forbid
//! indexing, `unwrap` and overflowing arithmetic.
#![no_std]
// The C names are the API: `twinhub_producer`, `TWINHUB_OK`.
#![allow(non_camel_case_types)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::undocumented_unsafe_blocks
    )
)]

#[cfg(all(feature = "std", not(target_os = "none")))]
extern crate std;

mod config;
mod producer;
mod store;
mod types;
mod wire;

pub use config::*;
pub use producer::*;
pub use store::*;
pub use types::*;
pub use wire::*;

/// Stops the program: a `no_std` library has no way to unwind, and its own code has no
/// panicking path (see the crate's lints), so this is only reached through a bug.
#[cfg(any(not(feature = "std"), target_os = "none"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        // An undefined instruction: a HardFault the firmware reports on Cortex-M, SIGILL on
        // a host. Either ends the program where a debugger can see it.
        #[cfg(any(target_arch = "arm", target_arch = "x86_64", target_arch = "x86"))]
        // SAFETY: raising an undefined-instruction fault touches no memory.
        unsafe {
            #[cfg(target_arch = "arm")]
            core::arch::asm!("udf #0", options(nomem, nostack));
            #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
            core::arch::asm!("ud2", options(nomem, nostack));
        }
    }
}

/// The unwinder's personality routine, which hosted targets' precompiled `core` (built to
/// unwind) names in its unwind tables. With `panic = "abort"` nothing unwinds, so it is
/// never called; without it a C program linking the library on a host fails to link.
#[cfg(all(not(feature = "std"), not(target_os = "none")))]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
