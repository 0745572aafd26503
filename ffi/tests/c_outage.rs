//! The host-side C test: `tests/c/outage.c` drives the README's outage story through the C
//! API, with the C RAM store of `c/ram_store.c`, against the host build of the `no_std`
//! static library (built here as C users build it: `--profile ffi --no-default-features`),
//! compiled by the system's C compiler (`CC`, else `cc`). Its output must be, line for
//! line, what the Rust engine prints for the same story (sdk-nostd/examples/outage.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::panic
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use twinhub_core::*;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the C library as firmware teams build it, in a target directory of its own (the
/// one running this test is locked by the cargo that runs it).
fn static_library() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ffi-c");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "twinhub-ffi", "--profile", "ffi"])
        .args(["--no-default-features", "--target-dir"])
        .arg(&target)
        .current_dir(crate_dir())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the C library builds");
    target.join("ffi/libtwinhub_ffi.a")
}

/// Compiles and links a C program against the library; returns the executable.
fn compile(sources: &[&str], out: &str) -> PathBuf {
    let lib = static_library();
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join(out);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let dir = crate_dir();
    let mut cmd = Command::new(&cc);
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg("-I")
        .arg(dir.join("include"))
        .arg("-I")
        .arg(dir.join("c"));
    for s in sources {
        cmd.arg(dir.join(s));
    }
    let status = cmd
        .arg(&lib)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| panic!("{cc} runs: {e}"));
    assert!(status.success(), "the C program compiles and links");
    exe
}

/// The outage story through the Rust engine, printed as sdk-nostd/examples/outage.rs prints
/// it (the same world, the same seed).
fn rust_story() -> String {
    let within = |t: u64, (a, b): (u64, u64)| t >= a && t < b;
    let outcome = |t: u64, tx: &Transmit| {
        let link_down = match tx.link.0 {
            0 => within(t, (1200, 4800)),
            1 => within(t, (1800, 4200)),
            _ => false,
        };
        if link_down || (tx.endpoint.0 == 0 && within(t, (600, 2400))) {
            Outcome::Unreachable
        } else {
            Outcome::Delivered
        }
    };
    let mut sat = LinkConfig::new("satellite", Cost::Costly);
    sat.budget = Some(Budget {
        bytes: 4 * 1024,
        window: Duration::from_days(1),
    });
    sat.arm_after = Duration::from_mins(10);
    let config = Config::builder("sensor-0001")
        .endpoint(EndpointConfig::new("primary"))
        .endpoint(EndpointConfig::new("secondary"))
        .link(LinkConfig::new("wan", Cost::Free))
        .link(LinkConfig::new("cell", Cost::Metered))
        .link(sat)
        .build()
        .unwrap();
    let name = |e: EndpointId| config.endpoints()[e.0 as usize].name.as_str();
    let link = |l: LinkId| config.links()[l.0 as usize].name.as_str();
    let mut p = Engine::new(&config, RamStore::<32768>::new(), Instant::ZERO, 1, 2026);
    let mut buf = vec![0u8; 300 * 1024];
    let mut inflight: Vec<(u64, TransmitId, Outcome)> = Vec::new();
    let mut over = [0u64; 3];
    let mut out = String::new();
    for t in 0..3 * 3600 {
        let now = Instant::from_millis(t * 1000);
        if t % 30 == 0 {
            let class = if t % 300 == 0 {
                Class::Critical
            } else {
                Class::Normal
            };
            let reading = format!(
                "{{\"t\":{t},\"temp\":{:.1}}}",
                20.0 + (t % 70) as f64 / 10.0
            );
            p.enqueue(now, reading.as_bytes(), class).unwrap();
        }
        for (_, id, o) in inflight.iter().filter(|x| x.0 <= t) {
            p.handle_outcome(now, *id, *o);
        }
        inflight.retain(|x| x.0 > t);
        p.handle_timeout(now);
        while let Some(tx) = p
            .poll_transmit(now, &mut buf)
            .expect("the buffer holds a batch")
        {
            let o = outcome(t, &tx);
            if o == Outcome::Delivered {
                over[tx.link.0 as usize] += u64::from(tx.records);
            }
            inflight.push((t + 1, tx.id, o));
        }
        while let Some(event) = p.poll_event() {
            let clock = format!("{:02}:{:02}:{:02}", 9 + t / 3600, t / 60 % 60, t % 60);
            let line = match event {
                Event::FailedOver { from, to } => {
                    format!("failed over {} -> {}", name(from), name(to))
                }
                Event::FailedBack { from, to } => {
                    format!("failed back {} -> {}", name(from), name(to))
                }
                Event::RouteDown {
                    endpoint,
                    link: l,
                    cause,
                } => format!("route {} via {} down ({cause:?})", name(endpoint), link(l)),
                Event::RouteUp { endpoint, link: l } => {
                    format!("route {} via {} up", name(endpoint), link(l))
                }
                Event::LinkDown { link: l } => format!("link {} down", link(l)),
                Event::LinkArmed { link: l } => format!("{} armed for critical records", link(l)),
                Event::LinkDisarmed { link: l } => format!("{} disarmed", link(l)),
                Event::BudgetExhausted { link: l } => {
                    format!("{} budget used up for today", link(l))
                }
                other => format!("{other:?}"),
            };
            writeln!(out, "{clock}  {line}").unwrap();
        }
    }
    let s = p.stats();
    writeln!(out).unwrap();
    writeln!(
        out,
        "accepted {}  delivered {}  pending {}  dropped {}",
        s.accepted,
        s.delivered,
        s.pending,
        s.dropped.total()
    )
    .unwrap();
    writeln!(
        out,
        "delivered over wan {}, cell {}, satellite {}",
        over[0], over[1], over[2]
    )
    .unwrap();
    writeln!(
        out,
        "satellite bytes {} of a {} byte budget",
        s.link_bytes[2],
        4 * 1024
    )
    .unwrap();
    writeln!(
        out,
        "failovers {}  failbacks {}  possible duplicates {}",
        s.failovers, s.failbacks, s.possible_duplicates
    )
    .unwrap();
    out
}

#[test]
fn the_outage_story_through_the_c_api_matches_the_rust_engine() {
    let exe = compile(&["tests/c/outage.c", "c/ram_store.c"], "c_outage");
    let run = Command::new(&exe).output().expect("the C program runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the C program's checks pass: {}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    let want = rust_story();
    assert_eq!(
        stdout, want,
        "the C API tells the story as the Rust engine does"
    );
    // The story's figures, as the README tells them.
    assert!(want.contains("accepted 360  delivered 360  pending 0  dropped 0"));
    assert!(want.contains("failed over primary -> secondary"));
    assert!(want.contains("failovers 1  failbacks 1"));
    println!("{stdout}");
}
