//! End to end, in C: the C firmware (firmware-demo-c, the engine through twinhub-ffi's C
//! API) booted in QEMU, wired to `twinhub gateway` and two emulator regions through the
//! harness of [`twinhub_tests::firmware`]. The same story and the same checks as the Rust
//! firmware's fresh boot ([`cut_then_region_loss`]).

use twinhub_tests::firmware::{Firmware, Rig, cut_then_region_loss};

#[test]
fn c_device_records_cross_the_gateway_through_a_cut_and_a_region_loss() {
    let mut rig = Rig::start(Firmware::c());
    cut_then_region_loss(&mut rig);
}
