//! Fixtures shared by twinhub's test suites, benchmarks and reliability runners: a real
//! mosquitto broker, librdkafka mock clusters read back by `kcat`, listeners on ephemeral
//! ports, records and endpoint specs, the ledger that tells delivered, dropped and lost
//! records apart by id, and the path of the `twinhub` binary under test.
//!
//! This crate is never a dependency of a product crate: only dev-dependencies and the
//! `twinhub-tests` crate use it.

pub mod fixtures;
pub mod kafka;
pub mod ledger;
pub mod mosquitto;
pub mod pki;
pub mod ports;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

pub use fixtures::*;
pub use ledger::{Arrivals, Ledger, Tally};
pub use mosquitto::{Mosquitto, collect_ids};
pub use pki::TestPki;
pub use ports::{ClosedPort, listener, unused_port};

/// The `twinhub` binary to run: `$TWINHUB_BIN` if set, else the one in the target
/// directory that holds the running executable, (re)built first with the same profile so
/// it is never stale. Integration tests of another package cannot name it through
/// `CARGO_BIN_EXE_twinhub`, which cargo only sets for a package's own binaries. Found (and
/// built) once per process: a build waits for cargo's lock on the target directory.
pub fn twinhub_exe() -> Result<PathBuf, String> {
    static EXE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    EXE.get_or_init(find_twinhub).clone()
}

fn find_twinhub() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("TWINHUB_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    // target/<profile>/deps/<test>-<hash> for tests, target/<profile>/<bin> for binaries.
    let mut dir = exe.parent().ok_or("no parent dir")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    // Selecting the suites' crate too gives the features of the build that made this
    // test, so the build reuses its artifacts instead of compiling the SDK again.
    build.args([
        "build",
        "--quiet",
        "-p",
        "twinhub-cli",
        "-p",
        "twinhub-tests",
        "--bin",
        "twinhub",
    ]);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .map_err(|e| format!("cannot run cargo to build twinhub: {e}"))?;
    if !status.success() {
        return Err(format!("building twinhub failed ({status})"));
    }
    let bin = dir.join(format!("twinhub{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("no twinhub binary at {}", bin.display()))
    }
}
