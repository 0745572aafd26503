//! `cargo xtask test | bench | ci | chaos | soak | fuzz`: one entry point for every check,
//! usable on a fresh machine: each entry first installs what it needs.
//!
//! `test` installs what is missing (rustup targets, cargo-deny, the advisory database copy,
//! Debian packages the suites need, the Python venv with Microsoft's clients for the
//! emulator's conformance suite), then runs formatting, clippy, every test, the engine's
//! bare-metal builds, the docs and `cargo deny`. `bench` runs every benchmark and prints one
//! table comparing twinhub with the raw baseline measured in the same run. `chaos` and
//! `soak` run the reliability runner of `tests/` (`twinhub-chaos`) at full length against
//! a release `twinhub`. `fuzz` installs the nightly toolchain and cargo-fuzz, runs every
//! fuzz target for a while and prints what each did and found.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Bare-metal targets the engine must build for.
const BARE_TARGETS: [&str; 2] = ["thumbv7em-none-eabihf", "x86_64-unknown-none"];

/// Debian packages the test suites start for real (added as suites need them), as
/// (package, binary, or for a library a file it installs). mosquitto: the emulator's
/// proxy-mode tests put the fault switch in front of a real broker (the binary lands in
/// /usr/sbin; the tests look there too). qemu-system-arm: the firmware demos boot on its
/// Cortex-M4 machine (mps2-an386). python3-venv: the emulator's conformance suite runs
/// Microsoft's Python clients from a venv (checked by running `python3 -m venv --help`, see
/// `venv_missing`). gcc-arm-none-eabi, picolibc-arm-none-eabi and make: the C firmware
/// (firmware-demo-c) is built with them; gcc: the C API's host test.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("mosquitto", "mosquitto"),
    // librdkafka's mock cluster and an independent consumer for the Kafka transport tests.
    ("kcat", "kcat"),
    ("qemu-system-arm", "qemu-system-arm"),
    ("python3-venv", "python3"),
    ("gcc-arm-none-eabi", "arm-none-eabi-gcc"),
    (
        "picolibc-arm-none-eabi",
        "/usr/lib/picolibc/arm-none-eabi/picolibc.specs",
    ),
    ("make", "make"),
    ("gcc", "gcc"),
];

/// Microsoft's clients the emulator's conformance suite runs (emulator/tests/conformance.rs),
/// pinned so a new release cannot change the suite unnoticed.
const CONFORMANCE_PACKAGES: &[&str] = &["azure-iot-device==2.14.0", "azure-eventhub==5.15.1"];

/// The firmware demo's image, built by its own manifest for the Cortex-M4 target.
const FIRMWARE_ELF: &str =
    "firmware-demo/target/thumbv7em-none-eabihf/release/twinhub-firmware-demo";
/// The C firmware's image (firmware-demo-c, built by its Makefile).
const FIRMWARE_C_ELF: &str = "firmware-demo-c/target/twinhub-firmware-demo-c.elf";
/// Footprint budgets of each firmware image (the Rust one keeps its outbox in flash
/// through the engine's `FlashStore`, the C one in a RAM store).
const FLASH_BUDGET: u64 = 64 * 1024;
const RAM_BUDGET: u64 = 16 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") | Some("ci") => test(),
        Some("bench") => bench(&args[1..]),
        Some("setup") => setup(),
        Some("header") => header(args.get(1).map(String::as_str) == Some("--check")),
        Some("fuzz") => fuzz(&args[1..]),
        Some("chaos") => chaos(&[], &args[1..]),
        Some("soak") => chaos(&["--soak", "30m"], &args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <test|ci|bench|setup|fuzz|chaos|soak>");
            eprintln!("  test   install what is missing, then run every check and suite");
            eprintln!("  bench  run every benchmark and print twinhub vs raw baseline");
            eprintln!("  setup  only install what is missing");
            eprintln!("  header [--check]");
            eprintln!("         write ffi/include/twinhub.h from twinhub-ffi (cbindgen), or check");
            eprintln!("         that the committed header is what the code generates");
            eprintln!(
                "  chaos [ARGS]  every reliability scenario at full length (about 40 minutes);"
            );
            eprintln!(
                "         ARGS go to twinhub-chaos (--short, --only kill,flap, --protocols kafka, --json FILE)"
            );
            eprintln!(
                "  soak [ARGS]   30 minutes at a fixed rate, 10 of them with both regions down"
            );
            eprintln!("  fuzz [SECONDS] [TARGET...]");
            eprintln!("         run each fuzz target (default: all) for SECONDS (default 30),");
            eprintln!("         one after another, and print a summary; fails on any crash");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.current_dir(root())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The reliability runner (`twinhub-chaos` of the `twinhub-tests` crate, release build)
/// with these arguments, driving a release `twinhub`; the test suite runs the short version.
fn chaos(args: &[&str], extra: &[String]) -> Result {
    debian_packages()?;
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "twinhub-cli",
        "--bin",
        "twinhub",
    ]))?;
    let twinhub = target_dir().join("release").join("twinhub");
    run(cargo()
        .args([
            "run",
            "--release",
            "-p",
            "twinhub-tests",
            "--bin",
            "twinhub-chaos",
            "--",
        ])
        .args(args)
        .args(extra)
        .env("TWINHUB_BIN", twinhub))
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Everything any entry needs.
fn setup() -> Result {
    // Targets are idempotent to add and cheap when present.
    let mut add = Command::new("rustup");
    add.args(["target", "add"]).args(BARE_TARGETS);
    run(&mut add)?;
    if !succeeds(cargo().args(["deny", "--version"])) {
        run(cargo().args(["install", "cargo-deny", "--locked"]))?;
    }
    nightly()?;
    debian_packages()?;
    conformance_venv()?;
    // The advisory database copy lives beside the repository, in shared/.
    let installer = root().join("../shared/tools/install-advisory-db");
    if installer.exists() {
        run(Command::new("bash").arg(installer))?;
    } else {
        return Err(format!(
            "advisory database installer not found at {}",
            installer.display()
        ));
    }
    Ok(())
}

/// The nightly toolchain (minimal profile): the fuzz targets' sanitizer flags need it.
fn nightly() -> Result {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    Ok(())
}

/// `cargo fuzz`, installed with the stable toolchain if it is missing.
fn cargo_fuzz() -> Result {
    if !succeeds(cargo().args(["fuzz", "--version"])) {
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// The Debian packages the suites and runners start (mosquitto, QEMU, kcat, the C
/// toolchains, python3-venv).
fn debian_packages() -> Result {
    let mut missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, bin)| {
            let probe = if bin.starts_with('/') {
                format!("test -e {bin}")
            } else {
                format!("command -v {bin}")
            };
            !succeeds(Command::new("sh").args(["-c", &probe]))
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    // python3 may be present without its venv module (Debian splits it out).
    if venv_missing() && !missing.contains(&"python3-venv") {
        missing.push("python3-venv");
    }
    if !missing.is_empty() {
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

fn venv_missing() -> bool {
    !succeeds(Command::new("python3").args(["-m", "venv", "--help"]))
}

/// The build's target directory: `CARGO_TARGET_DIR` or `target/` (tests find the venv
/// beside their own binary, so both agree).
fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { root().join(d) }
        }
        None => root().join("target"),
    }
}

/// `{target}/conformance-venv` with Microsoft's pinned clients, made if missing or stale.
fn conformance_venv() -> Result {
    let venv = target_dir().join("conformance-venv");
    let python = venv.join("bin/python");
    let pins = venv.join("twinhub-pins.txt");
    let want = CONFORMANCE_PACKAGES.join("\n");
    if python.exists() && fs::read_to_string(&pins).ok().as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(CONFORMANCE_PACKAGES))?;
    fs::write(&pins, want).map_err(|e| format!("cannot write {}: {e}", pins.display()))
}

fn test() -> Result {
    setup()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    // The C header is committed: it must be what the code generates.
    header(true)?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "--workspace"]))?;
    // The flash outbox is an optional feature of the engine: lint and test it too.
    run(cargo().args([
        "clippy",
        "-p",
        "twinhub-core",
        "--all-targets",
        "--features",
        "flash",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "-p", "twinhub-core", "--features", "flash"]))?;
    for target in BARE_TARGETS {
        // Both with the SAS signer and without any optional feature.
        run(cargo().args([
            "build",
            "-p",
            "twinhub-core",
            "--release",
            "--target",
            target,
        ]))?;
        run(cargo().args([
            "build",
            "-p",
            "twinhub-core",
            "--no-default-features",
            "--target",
            target,
        ]))?;
        run(cargo().args([
            "build",
            "-p",
            "twinhub-core",
            "--release",
            "--no-default-features",
            "--features",
            "flash",
            "--target",
            target,
        ]))?;
        // The defmt::Format derives, as firmware that logs with defmt builds them.
        run(cargo().args([
            "build",
            "-p",
            "twinhub-core",
            "--no-default-features",
            "--features",
            "defmt",
            "--target",
            target,
        ]))?;
    }
    firmware()?;
    run(cargo()
        .args([
            "doc",
            "--workspace",
            "--no-deps",
            "--features",
            "twinhub-core/flash",
        ])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    // The fuzz targets are outside the workspace: hold them to the same lints. Only
    // running them needs nightly (the sanitizer flags); they build on stable too.
    run(cargo().args([
        "clippy",
        "--manifest-path",
        "fuzz/Cargo.toml",
        "--bins",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--check"]))?;
    // `cargo deny` reads the metadata of every platform's dependencies (windows-sys too),
    // which a fresh machine has not downloaded; the advisory database stays the offline copy.
    run(cargo().args(["fetch"]))?;
    run(cargo().args(["deny", "--offline", "check"]))?;
    eprintln!("xtask: every check passed");
    Ok(())
}

/// The firmware demo (outside the workspace): format, lint, build, boot it in QEMU and
/// hold it to its verdict and its footprint budgets.
fn firmware() -> Result {
    let manifest = ["--manifest-path", "firmware-demo/Cargo.toml"];
    run(cargo().args(["fmt", "--check"]).args(manifest))?;
    run(cargo()
        .args(["clippy", "--release", "--target", BARE_TARGETS[0]])
        .args(manifest)
        .args(["--", "-D", "warnings"]))?;
    // Built from its own folder, whose cargo config names the target and the linker
    // script. It is booted in QEMU, wired to `twinhub gateway`, by the end-to-end tests
    // (tests/tests/firmware_gateway.rs in twinhub-tests) that `cargo test` ran above: one
    // run on fresh flash, and one killed at random points and booted again on the same
    // flash file. Each test runs QEMU in its own temporary directory, where the firmware
    // keeps its flash file.
    let mut build = cargo();
    build
        .args(["build", "--release", "--config", &firmware_remap()])
        .current_dir(root().join("firmware-demo"));
    eprintln!("xtask: running {build:?} in firmware-demo/");
    let status = build
        .status()
        .map_err(|e| format!("cannot build the firmware: {e}"))?;
    if !status.success() {
        return Err(format!("the firmware build failed ({status})"));
    }
    // The C firmware on the C API: its Makefile builds the static library for the
    // Cortex-M4 (in its own target directory) and links it with picolibc. It too is booted
    // by an end-to-end test (tests/tests/firmware_c_gateway.rs).
    run(Command::new("make").args(["-C", "firmware-demo-c"]))?;
    for (name, elf) in [("Rust", FIRMWARE_ELF), ("C", FIRMWARE_C_ELF)] {
        let (flash, ram) = footprint(elf)?;
        eprintln!(
            "xtask: {name} firmware footprint: flash {flash} B (budget {FLASH_BUDGET}), static RAM {ram} B (budget {RAM_BUDGET})"
        );
        if flash > FLASH_BUDGET || ram > RAM_BUDGET {
            return Err(format!(
                "the {name} firmware image is over its footprint budget"
            ));
        }
    }
    Ok(())
}

/// Flash (vectors, code, read-only data, initialised data) and static RAM (initialised
/// and zeroed data; not the stack) of a firmware image, from its ELF sections: the Rust
/// image's (cortex-m-rt's names) or the C one's (picolibc's, whose vectors are in `.init`).
fn footprint(elf: &str) -> Result<(u64, u64)> {
    use object::{Object, ObjectSection};
    let path = root().join(elf);
    let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let elf = object::File::parse(&*bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = |name: &str| elf.section_by_name(name).map_or(0, |s| s.size());
    let flash =
        size(".vector_table") + size(".init") + size(".text") + size(".rodata") + size(".data");
    let ram = size(".data") + size(".bss") + size(".uninit");
    Ok((flash, ram))
}

/// The full fabrikam scenarios, each run end to end by the release CLI as an operator runs
/// it: how many times faster than real time it simulates, and records lost (from what the
/// simulated regions received, by id; none is the only acceptable figure).
fn fleet_rows(rows: &mut Vec<Row>) -> Result {
    run(cargo().args(["build", "--release", "--quiet", "-p", "twinhub-cli"]))?;
    let cli = target_dir().join("release").join("twinhub");
    for (name, file) in [
        ("fabrikam, 800,000 devices", "scenarios/fabrikam.toml"),
        (
            "fabrikam-2m, 2,000,000 devices",
            "scenarios/fabrikam-2m.toml",
        ),
    ] {
        let json = target_dir().join(format!(
            "bench-{}.json",
            name.split(',').next().unwrap_or(name)
        ));
        run(Command::new(&cli)
            .args(["sim", "--scenario", file, "--json"])
            .arg(&json)
            .current_dir(root()))?;
        let text = fs::read_to_string(&json)
            .map_err(|e| format!("cannot read {}: {e}", json.display()))?;
        let report: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
        let field = |k: &str| {
            report[k]
                .as_f64()
                .ok_or_else(|| format!("{}: no number `{k}`", json.display()))
        };
        let (simulated, wall) = (field("simulated_s")?, field("wall_s")?);
        eprintln!("xtask: {name}: {simulated} s simulated in {wall:.1} s");
        rows.push(Row {
            name: format!("{name}, whole run: simulated time per wall time (real time)"),
            ours: simulated / wall,
            base: 1.0,
            unit: "x".into(),
        });
        rows.push(Row {
            name: format!("{name}, whole run: wall time (the simulated span)"),
            ours: wall,
            base: simulated,
            unit: "s".into(),
        });
        rows.push(Row {
            name: format!("{name}, whole run: records lost (of those accepted)"),
            ours: field("lost")?,
            base: field("accepted")?,
            unit: "records".into(),
        });
    }
    Ok(())
}

/// A `--config` for firmware builds that writes this checkout's path as `twinhub` in the
/// image: panic locations name source files, so without it the image, and its footprint
/// against the budget, would grow with the length of the path it was built in. Cargo
/// joins this array to the firmware's own rustflags (its linker script).
fn firmware_remap() -> String {
    format!(
        "target.{}.rustflags=['--remap-path-prefix={}=twinhub']",
        BARE_TARGETS[0],
        root().display()
    )
}

/// The C header of twinhub-ffi, generated by cbindgen.
const HEADER: &str = "ffi/include/twinhub.h";

/// Writes the C header from the crate, or with `check` generates it to a temporary file
/// and fails (showing the difference) when it is not the committed one.
fn header(check: bool) -> Result {
    let crate_dir = root().join("ffi");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .map_err(|e| format!("ffi/cbindgen.toml: {e}"))?;
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .map_err(|e| format!("cbindgen: {e}"))?;
    let committed = root().join(HEADER);
    if !check {
        bindings.write_to_file(&committed);
        eprintln!("xtask: wrote {HEADER}");
        return Ok(());
    }
    let fresh = env::temp_dir().join(format!("twinhub-header-{}.h", std::process::id()));
    bindings.write_to_file(&fresh);
    let (want, got) = (fs::read_to_string(&fresh), fs::read_to_string(&committed));
    let same = matches!((&want, &got), (Ok(w), Ok(g)) if w == g);
    if !same {
        // `diff` shows what drifted; its absence only costs the detail.
        let _ = Command::new("diff")
            .arg("-u")
            .arg(&committed)
            .arg(&fresh)
            .status();
    }
    let _ = fs::remove_file(&fresh);
    if same {
        eprintln!("xtask: {HEADER} is what the code generates");
        Ok(())
    } else {
        Err(format!(
            "{HEADER} differs from what twinhub-ffi generates: run `cargo xtask header` and commit it"
        ))
    }
}

fn bench(extra: &[String]) -> Result {
    // The transport benchmarks start a real mosquitto.
    debian_packages()?;
    let out = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["bench", "--workspace"])
        .args(extra)
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo bench: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() {
        return Err("cargo bench failed".into());
    }
    let mut rows = criterion_rows(&target_dir().join("criterion"));
    // Benches print extra figures as `ROW<TAB>name<TAB>ours<TAB>baseline<TAB>unit` lines.
    for line in stdout.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 5
            && f[0] == "ROW"
            && let (Ok(ours), Ok(base)) = (f[2].parse::<f64>(), f[3].parse::<f64>())
        {
            rows.push(Row {
                name: f[1].into(),
                ours,
                base,
                unit: f[4].into(),
            });
        }
    }
    fleet_rows(&mut rows)?;
    // The firmware's footprint against its budgets (built, not run: no QEMU needed).
    run(cargo()
        .args([
            "build",
            "--release",
            "--quiet",
            "--config",
            &firmware_remap(),
        ])
        .current_dir(root().join("firmware-demo")))?;
    let (flash, ram) = footprint(FIRMWARE_ELF)?;
    rows.push(Row {
        name: "firmware flash (budget as baseline)".into(),
        ours: flash as f64,
        base: FLASH_BUDGET as f64,
        unit: "B".into(),
    });
    rows.push(Row {
        name: "firmware static RAM, flash outbox (budget)".into(),
        ours: ram as f64,
        base: RAM_BUDGET as f64,
        unit: "B".into(),
    });
    // The C firmware (the engine through the C API, picolibc) beside the Rust one.
    run(Command::new("make").args(["--quiet", "-C", "firmware-demo-c"]))?;
    let (c_flash, c_ram) = footprint(FIRMWARE_C_ELF)?;
    rows.push(Row {
        name: "C firmware flash (Rust firmware's as baseline)".into(),
        ours: c_flash as f64,
        base: flash as f64,
        unit: "B".into(),
    });
    rows.push(Row {
        name: "C firmware static RAM (Rust firmware's)".into(),
        ours: c_ram as f64,
        base: ram as f64,
        unit: "B".into(),
    });
    println!();
    println!(
        "{:<48} {:>14} {:>14} {:>8}",
        "benchmark", "twinhub", "baseline", "ratio"
    );
    for r in &rows {
        let ratio = if r.base > 0.0 {
            r.ours / r.base
        } else {
            f64::NAN
        };
        println!(
            "{:<48} {:>11.1} {:<2} {:>11.1} {:<2} {:>7.2}x",
            r.name, r.ours, r.unit, r.base, r.unit, ratio
        );
    }
    Ok(())
}

struct Row {
    name: String,
    ours: f64,
    base: f64,
    unit: String,
}

/// Every criterion group holding a `twinhub` and a `baseline` function becomes a row
/// (mean time per iteration, as criterion measured it in this run).
fn criterion_rows(dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let Ok(groups) = fs::read_dir(dir) else {
        return rows;
    };
    let mut groups: Vec<_> = groups.flatten().map(|e| e.path()).collect();
    groups.sort();
    for g in groups {
        let mean = |id: &str| -> Option<f64> {
            let text = fs::read_to_string(g.join(id).join("new/estimates.json")).ok()?;
            // {"mean":{"confidence_interval":{...},"point_estimate":123.4,...
            let after = &text[text.find("\"mean\"")?..];
            let pe = &after[after.find("\"point_estimate\":")? + 17..];
            let end = pe.find([',', '}'])?;
            pe[..end].trim().parse().ok()
        };
        if let (Some(ours), Some(base)) = (mean("twinhub"), mean("baseline")) {
            // The group's full name (it says what the baseline is); criterion shortens the
            // directory name to 64 bytes.
            let name = fs::read_to_string(g.join("twinhub/new/benchmark.json"))
                .ok()
                .and_then(|t| json_string(&t, "group_id"))
                .unwrap_or_else(|| g.file_name().unwrap_or_default().to_string_lossy().into());
            rows.push(Row {
                name,
                ours,
                base,
                unit: "ns".into(),
            });
        }
    }
    rows
}

/// The string value of `"key":"..."` in a small JSON text (no escapes expected).
fn json_string(text: &str, key: &str) -> Option<String> {
    let pattern = format!("\"{key}\":\"");
    let start = text.find(&pattern)? + pattern.len();
    let end = start + text[start..].find('"')?;
    Some(text[start..end].to_owned())
}

/// What one fuzz target did, from libFuzzer's output.
#[derive(Default)]
struct FuzzRow {
    target: String,
    runs: Option<u64>,
    seconds: Option<u64>,
    exec_per_sec: Option<u64>,
    cov: Option<u64>,
    /// New files in `fuzz/artifacts/<target>/` (crash, leak, timeout and oom inputs).
    findings: usize,
    ok: bool,
}

/// The fuzz targets: the `[[bin]]` names of `fuzz/Cargo.toml`.
fn fuzz_targets(manifest: &str) -> Vec<String> {
    let mut in_bin = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin
            && let Some(value) = line.strip_prefix("name").map(str::trim_start)
            && let Some(value) = value.strip_prefix('=')
        {
            names.push(value.trim().trim_matches('"').to_owned());
        }
    }
    names
}

/// The number after `key` in a libFuzzer line (`cov: 123`, `exec/s: 45`).
fn fuzz_stat(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Files in a directory (none if it does not exist).
fn file_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `cargo xtask fuzz [SECONDS] [TARGET...]`: runs each fuzz target (all of
/// `fuzz/Cargo.toml`'s by default) for SECONDS, one at a time, and prints one row per
/// target. Fails if any target crashed or left a new artifact.
fn fuzz(args: &[String]) -> Result {
    let seconds: u64 = match args.first() {
        None => 30,
        Some(s) => s
            .parse()
            .map_err(|_| format!("fuzz: {s:?} is not a number of seconds"))?,
    };
    // A fresh machine has neither: `cargo fuzz` would be "no such command".
    nightly()?;
    cargo_fuzz()?;
    let dir = root().join("fuzz");
    let manifest = fs::read_to_string(dir.join("Cargo.toml"))
        .map_err(|e| format!("cannot read fuzz/Cargo.toml: {e}"))?;
    let all = fuzz_targets(&manifest);
    let targets: Vec<String> = match args.get(1..) {
        Some(chosen) if !chosen.is_empty() => {
            if let Some(t) = chosen.iter().find(|t| !all.contains(t)) {
                return Err(format!(
                    "fuzz: no target {t:?} (targets: {})",
                    all.join(", ")
                ));
            }
            chosen.to_vec()
        }
        _ => all,
    };
    // The fuzz workspace needs nightly; a toolchain pinned by the caller would override it.
    let nightly_cargo = || {
        let mut c = Command::new("cargo");
        c.arg("+nightly").env_remove("RUSTUP_TOOLCHAIN");
        c
    };
    // Build everything first, so a build error stops here and run times are fuzzing only.
    run(nightly_cargo().args(["fuzz", "build"]))?;
    let mut rows = Vec::new();
    for target in &targets {
        rows.push(fuzz_one(&mut nightly_cargo(), &dir, target, seconds)?);
    }
    println!();
    println!(
        "{:<20} {:>12} {:>8} {:>9} {:>7} {:>9}  result",
        "target", "executions", "seconds", "exec/s", "cov", "findings"
    );
    let show = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
    for r in &rows {
        println!(
            "{:<20} {:>12} {:>8} {:>9} {:>7} {:>9}  {}",
            r.target,
            show(r.runs),
            show(r.seconds),
            show(r.exec_per_sec),
            show(r.cov),
            r.findings,
            match (r.ok, r.runs) {
                (true, _) => "ok",
                // No libFuzzer statistics: it never started (a build error, say).
                (false, None) => "FAILED",
                (false, Some(_)) => "CRASHED",
            }
        );
    }
    let crashed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.target.as_str())
        .collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzz: {} failed; crash inputs are in fuzz/artifacts/<target>/",
            crashed.join(", ")
        ))
    }
}

/// Runs one target, echoing libFuzzer's output except its per-input progress lines.
fn fuzz_one(cmd: &mut Command, dir: &Path, target: &str, seconds: u64) -> Result<FuzzRow> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let artifacts = dir.join("artifacts").join(target);
    let before = file_names(&artifacts);
    cmd.args(["fuzz", "run", target, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .current_dir(root())
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    eprintln!("xtask: running {cmd:?}");
    let started = std::time::Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let mut row = FuzzRow {
        target: target.to_owned(),
        ..FuzzRow::default()
    };
    if let Some(stderr) = child.stderr.take() {
        let mut reader = BufReader::new(stderr);
        let mut raw = Vec::new();
        while reader.read_until(b'\n', &mut raw).unwrap_or(0) > 0 {
            let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
            raw.clear();
            // `#1234  DONE   cov: 56 ft: 78 corp: 9/10b lim: 4096 exec/s: 11 rss: 12Mb`
            if let Some(stats) = line.strip_prefix('#') {
                row.runs = fuzz_stat(stats, "").or(row.runs);
                row.cov = fuzz_stat(stats, "cov:").or(row.cov);
                row.exec_per_sec = fuzz_stat(stats, "exec/s:").or(row.exec_per_sec);
                if stats.contains("\tNEW ") || stats.contains("\tREDUCE ") {
                    continue;
                }
            }
            // `Done 1234 runs in 30 second(s)`
            if let Some(rest) = line.strip_prefix("Done ") {
                row.runs = fuzz_stat(rest, "").or(row.runs);
                row.seconds = fuzz_stat(rest, "runs in");
            }
            eprintln!("{line}");
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for {target}: {e}"))?;
    row.seconds = row.seconds.or(Some(started.elapsed().as_secs()));
    row.findings = file_names(&artifacts)
        .iter()
        .filter(|f| !before.contains(f))
        .count();
    row.ok = status.success() && row.findings == 0;
    Ok(row)
}
