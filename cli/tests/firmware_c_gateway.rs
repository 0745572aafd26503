//! End to end, in C: the C firmware (firmware-demo-c, the engine through twinhub-ffi's C
//! API) boots in QEMU (`mps2-an386`, a Cortex-M4), its two UARTs reach `twinhub gateway`
//! over TCP, and the gateway forwards to two emulator regions. The same story and the same
//! checks as the Rust firmware's test (firmware_gateway.rs).
//!
//! The test stands between the device and the gateway on both lines: it cuts the UART
//! (bytes in both directions are swallowed) until the satellite has carried critical
//! records, heals it, then kills the primary region. Every record the device accepted must
//! reach a region under its own id, no normal record may cross the satellite, and the
//! satellite's bytes must stay within the device's budget.
//!
//! Needs `qemu-system-arm`, `gcc-arm-none-eabi`, `picolibc-arm-none-eabi`, `make` and the
//! `thumbv7em-none-eabihf` target (`cargo xtask setup` installs them).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use twinhub::Class;
use twinhub::wire::{self, Uplink};
use twinhub_emulator::{Emulator, EmulatorConfig, Fault, Record};

const ORIGIN_ID: &str = "twinhub-origin-id";
const DEVICE: &str = "sensor-c7";
const SAT_BUDGET: u64 = 512;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// Builds the C firmware with its Makefile, which builds the static library for the
/// Cortex-M4 in a target directory of its own (this test's cargo holds its own locked).
fn build_firmware() -> PathBuf {
    let dir = root().join("firmware-demo-c");
    let status = Command::new("make")
        .arg("-C")
        .arg(&dir)
        .env(
            "CARGO",
            std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
        )
        .status()
        .expect("make runs");
    assert!(
        status.success(),
        "the C firmware builds (needs gcc-arm-none-eabi, picolibc-arm-none-eabi and the \
         thumbv7em-none-eabihf target: cargo xtask setup)"
    );
    dir.join("target/twinhub-firmware-demo-c.elf")
}

/// What crossed one device line, counted by the test in the middle of it.
#[derive(Default)]
struct Line {
    cut: AtomicBool,
    device_bytes: AtomicU64,
    critical: AtomicU64,
    normal: AtomicU64,
}

/// Accepts QEMU's connection for one UART and relays it to the gateway, counting what the
/// device sends and swallowing everything while the line is cut.
async fn relay(listener: TcpListener, gateway: String, line: Arc<Line>) {
    let (qemu, _) = listener.accept().await.unwrap();
    let gw = TcpStream::connect(&gateway).await.unwrap();
    let (mut q_rd, mut q_wr) = qemu.into_split();
    let (mut g_rd, mut g_wr) = gw.into_split();
    let up_line = line.clone();
    let up = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let mut message = Vec::new();
        loop {
            let n = match q_rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Everything the device wrote counts, swallowed or not: it is what it paid for.
            up_line.device_bytes.fetch_add(n as u64, Ordering::SeqCst);
            if up_line.cut.load(Ordering::SeqCst) {
                continue;
            }
            for &b in &buf[..n] {
                if b != 0 {
                    message.push(b);
                    continue;
                }
                if let Ok(Uplink::Record { class, .. }) = wire::decode::<Uplink<'_>>(&mut message) {
                    let counter = if class == Class::Critical {
                        &up_line.critical
                    } else {
                        &up_line.normal
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                message.clear();
            }
            if g_wr.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 4096];
    loop {
        let n = match g_rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if line.cut.load(Ordering::SeqCst) {
            continue;
        }
        if q_wr.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = up.await;
}

/// The origin ids (the device's own ids) a region received.
fn origin_ids(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| r.properties.get(ORIGIN_ID).cloned())
        .collect()
}

/// The device's console (semihosting), read on its own thread: every line so far, when
/// the last one came, and whether it has closed (the firmware exited).
#[derive(Clone)]
struct Console(Arc<Mutex<ConsoleState>>);

struct ConsoleState {
    lines: Vec<String>,
    last: Instant,
    closed: bool,
}

/// How long the device may print nothing: it prints its progress every 30 s of device
/// time (1.5 s of a host at speed). A loaded host gives QEMU fewer ticks, which makes the
/// run slower but not silent; only a stuck device is silent this long.
const STALL: Duration = Duration::from_secs(90);
/// How long any one wait may take however the device is doing.
const PATIENCE: Duration = Duration::from_secs(600);

impl Console {
    fn of(child: &mut Child) -> Console {
        let stdout = child.stdout.take().unwrap();
        let console = Console(Arc::new(Mutex::new(ConsoleState {
            lines: Vec::new(),
            last: Instant::now(),
            closed: false,
        })));
        let shared = console.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut s = shared.0.lock().unwrap();
                s.lines.push(l);
                s.last = Instant::now();
            }
            shared.0.lock().unwrap().closed = true;
        });
        console
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().lines.join("\n")
    }

    fn closed(&self) -> bool {
        self.0.lock().unwrap().closed
    }

    /// What is wrong, if anything, with a wait that began at `since`: the device exited or
    /// stalled, or the wait has been too long.
    fn trouble(&self, since: Instant) -> Option<&'static str> {
        let s = self.0.lock().unwrap();
        if s.closed {
            Some("the firmware exited")
        } else if s.last.elapsed() > STALL {
            Some("the device printed nothing for 90 s")
        } else if since.elapsed() > PATIENCE {
            Some("ten minutes passed")
        } else {
            None
        }
    }

    /// Polls `f` until it holds, for as long as the device makes progress; otherwise fails,
    /// showing the console.
    fn wait(&self, what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            // `f` is asked once more: the trouble may be what it waits for (an exit).
            if let Some(why) = self.trouble(start)
                && !f()
            {
                panic!(
                    "{why} while waiting for {what} ({:.0} s into the wait); its console:\n{}",
                    start.elapsed().as_secs_f64(),
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "firmware_c_gateway: {what} after {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
}

/// Kills the child when the test ends, whichever way.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// The number after `key` in a line like `... key 42 ...`.
fn field(line: &str, key: &str) -> u64 {
    let rest = line
        .split(&format!(" {key} "))
        .nth(1)
        .unwrap_or_else(|| panic!("no `{key}` in {line}"));
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn c_device_records_cross_the_gateway_through_a_cut_and_a_region_loss() {
    let elf = build_firmware();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt
        .block_on(Emulator::start(EmulatorConfig::with_regions([
            "primary",
            "secondary",
        ])))
        .unwrap();
    let (primary, secondary) = (emu["primary"].clone(), emu["secondary"].clone());

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"device_id = "gateway-1"

[outbox]
path = "{}"
max_bytes = "16MiB"
fsync = "batch"

[[endpoint]]
name = "primary"
protocol = "event-hubs"
connection_string = "{}"

[[endpoint]]
name = "secondary"
protocol = "event-hubs"
connection_string = "{}"
"#,
            dir.path().join("outbox").display(),
            primary.event_hubs_connection_string(),
            secondary.event_hubs_connection_string(),
        ),
    )
    .unwrap();
    let mut gateway = Reap(
        Command::new(env!("CARGO_BIN_EXE_twinhub"))
            .args(["gateway", "--config"])
            .arg(&cfg)
            .args(["--listen", "tcp://127.0.0.1:0", "--drain-timeout", "30s"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let gateway_out = lines_of(&mut gateway.0);
    let first = gateway_out
        .recv_timeout(Duration::from_secs(30))
        .expect("the gateway prints where it listens");
    let listening: serde_json::Value = serde_json::from_str(&first).unwrap();
    let gateway_addr = listening["listening"].as_str().unwrap().to_string();

    let uart = Arc::new(Line::default());
    let satellite = Arc::new(Line::default());
    let mut ports = Vec::new();
    for line in [&uart, &satellite] {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        ports.push(listener.local_addr().unwrap().port());
        rt.spawn(relay(listener, gateway_addr.clone(), line.clone()));
    }

    let mut qemu = Reap(
        Command::new("qemu-system-arm")
            .args(["-cpu", "cortex-m4", "-machine", "mps2-an386", "-nographic"])
            .args([
                "-monitor",
                "none",
                "-semihosting-config",
                "enable=on,target=native",
            ])
            .args(["-serial", &format!("tcp:127.0.0.1:{}", ports[0])])
            .args(["-serial", &format!("tcp:127.0.0.1:{}", ports[1])])
            .arg("-kernel")
            .arg(&elf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("qemu-system-arm runs (cargo xtask setup installs it)"),
    );
    let console = Console::of(&mut qemu.0);
    let from_device = |r: &[Record]| {
        origin_ids(r)
            .into_iter()
            .filter(|id| id.starts_with(DEVICE))
            .count()
    };
    let minute = Duration::from_secs(60);

    // Records flow over the UART to the primary.
    console.wait("records at the primary", || {
        from_device(&primary.records()) >= 5
    });
    assert_eq!(satellite.critical.load(Ordering::SeqCst), 0);

    // Cut the UART: critical records take the satellite once it is armed; normal ones wait.
    uart.cut.store(true, Ordering::SeqCst);
    console.wait("critical records over the satellite", || {
        satellite.critical.load(Ordering::SeqCst) >= 2
    });
    assert_eq!(satellite.normal.load(Ordering::SeqCst), 0);

    // Heal it: the backlog of normal records follows over the UART.
    let normal_before = uart.normal.load(Ordering::SeqCst);
    uart.cut.store(false, Ordering::SeqCst);
    console.wait("normal records over the healed UART", || {
        uart.normal.load(Ordering::SeqCst) >= normal_before + 10
    });

    // Lose the primary region: the gateway fails over to the secondary.
    primary.set_fault(Fault::Down);
    console.wait("records at the secondary", || {
        from_device(&secondary.records()) >= 5
    });

    // The device stops sampling, drains and reports.
    console.wait("the firmware to finish", || console.closed());
    let status = qemu.0.wait().unwrap();
    let report = console.text();
    println!("{report}");
    assert!(
        status.success(),
        "the firmware's own checks pass:\n{report}"
    );
    let counts = report
        .lines()
        .find(|l| l.starts_with("firmware: device "))
        .expect("the firmware reports its counts");
    let accepted = field(counts, "accepted");
    assert!(accepted >= 100, "the device ran its course: {counts}");
    let lines = report
        .lines()
        .find(|l| l.contains("satellite bytes"))
        .unwrap();
    assert_eq!(
        field(lines, "bytes"),
        uart.device_bytes.load(Ordering::SeqCst),
        "the UART bytes the device counted are the bytes that crossed"
    );
    let sat_bytes = satellite.device_bytes.load(Ordering::SeqCst);
    assert_eq!(
        field(&lines.replace("satellite bytes", "sat"), "sat"),
        sat_bytes
    );
    assert!(
        sat_bytes <= SAT_BUDGET,
        "satellite bytes {sat_bytes} within the budget {SAT_BUDGET}"
    );
    assert_eq!(satellite.normal.load(Ordering::SeqCst), 0);

    // Every record the device accepted is at a region under the device's own id.
    let want: BTreeSet<String> = (0..accepted).map(|s| format!("{DEVICE}:1:{s}")).collect();
    let mut missing = Vec::new();
    let arrived = (|| {
        let start = Instant::now();
        loop {
            let mut got = origin_ids(&primary.records());
            got.extend(origin_ids(&secondary.records()));
            missing = want.difference(&got).cloned().collect();
            if missing.is_empty() || start.elapsed() > minute {
                return missing.is_empty();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })();
    assert!(arrived, "records missing at both regions: {missing:?}");

    // Stopping the gateway drains it; its stats count what the lines carried.
    let pid = gateway.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let stats = gateway_out
        .recv_timeout(minute)
        .expect("the gateway prints its stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["pending"], 0, "{stats}");
    assert!(
        stats["device_acks"].as_u64().unwrap() >= accepted,
        "{stats}"
    );
    assert_eq!(gateway.0.wait().unwrap().code(), Some(0));
}
