//! The harness of the firmware end-to-end suites: a firmware image booted in QEMU
//! (`mps2-an386`, a Cortex-M4), its two UARTs relayed over TCP to `twinhub gateway`, and
//! the gateway forwarding to two emulator regions.
//!
//! The harness stands between the device and the gateway on both lines (a relay per line,
//! which takes a new connection at every boot): it can cut a line (bytes in both directions
//! are swallowed), and counts what the device puts on each. QEMU runs in the rig's
//! temporary directory, where a firmware with a flash outbox keeps its flash file
//! (semihosting), so a device killed and booted again finds its records.
//!
//! Needs `qemu-system-arm` and the `thumbv7em-none-eabihf` target; the C firmware also
//! `gcc-arm-none-eabi`, `picolibc-arm-none-eabi` and `make` (`cargo xtask setup` installs
//! them all).

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
use twinhub_emulator::{Emulator, EmulatorConfig, Fault, Record, Region};
use twinhub_testkit::write_config;

/// The property that carries a record's id as the device gave it.
pub const ORIGIN_ID: &str = "twinhub-origin-id";
/// Satellite bytes each firmware may spend (its budget, as its configuration sets it).
pub const SAT_BUDGET: u64 = 512;

/// How long the device may print nothing: it prints its progress every 30 s of device
/// time (1.5 s of a host at speed). A loaded host gives QEMU fewer ticks, which makes the
/// run slower but not silent; only a stuck device is silent this long.
const STALL: Duration = Duration::from_secs(90);
/// How long any one wait may take however the device is doing.
const PATIENCE: Duration = Duration::from_secs(600);

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the suites' crate is in the repository")
        .into()
}

/// A firmware image to boot, and the device id it sends under.
#[derive(Debug, Clone)]
pub struct Firmware {
    /// The ELF image.
    pub elf: PathBuf,
    /// Its device id: the prefix of its records' origin ids.
    pub device: &'static str,
}

impl Firmware {
    /// The Rust firmware (firmware-demo), built by its own manifest (and so its own target
    /// and runner).
    pub fn rust() -> Firmware {
        let dir = root().join("firmware-demo");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target-dir"])
            .arg(dir.join("target"))
            // As `cargo xtask` builds it: source paths in the image (panic locations) do
            // not depend on where the checkout is, so neither does its size.
            .arg("--config")
            .arg(format!(
                "target.thumbv7em-none-eabihf.rustflags=['--remap-path-prefix={}=twinhub']",
                root().display()
            ))
            .current_dir(&dir)
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "the firmware builds (needs the thumbv7em-none-eabihf target: cargo xtask setup)"
        );
        Firmware {
            elf: dir.join("target/thumbv7em-none-eabihf/release/twinhub-firmware-demo"),
            device: "sensor-7",
        }
    }

    /// The C firmware (firmware-demo-c, the engine through the C API), built by its
    /// Makefile, which builds the static library for the Cortex-M4 in a target directory of
    /// its own (this test's cargo holds its own locked).
    pub fn c() -> Firmware {
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
        Firmware {
            elf: dir.join("target/twinhub-firmware-demo-c.elf"),
            device: "sensor-c7",
        }
    }
}

/// What crossed one device line, counted by the harness in the middle of it.
#[derive(Debug, Default)]
pub struct Line {
    cut: AtomicBool,
    device_bytes: AtomicU64,
    critical: AtomicU64,
    normal: AtomicU64,
}

impl Line {
    /// Cuts the line (bytes in both directions are swallowed), or heals it.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    /// Every byte the device wrote, swallowed or not: what it paid for.
    pub fn device_bytes(&self) -> u64 {
        self.device_bytes.load(Ordering::SeqCst)
    }

    /// Critical records the device sent that crossed.
    pub fn critical(&self) -> u64 {
        self.critical.load(Ordering::SeqCst)
    }

    /// Normal and bulk records the device sent that crossed.
    pub fn normal(&self) -> u64 {
        self.normal.load(Ordering::SeqCst)
    }
}

/// Accepts QEMU's connections for one UART (one per boot) and relays each to the gateway.
async fn relay(listener: TcpListener, gateway: String, line: Arc<Line>) {
    while let Ok((qemu, _)) = listener.accept().await {
        tokio::spawn(relay_one(qemu, gateway.clone(), line.clone()));
    }
}

/// Relays one connection of QEMU's to the gateway, counting what the device sends and
/// swallowing everything while the line is cut.
async fn relay_one(qemu: TcpStream, gateway: String, line: Arc<Line>) {
    let Ok(gw) = TcpStream::connect(&gateway).await else {
        return; // the gateway has stopped: the device's line stays dead
    };
    let (q_rd, mut q_wr) = qemu.into_split();
    let (mut g_rd, g_wr) = gw.into_split();
    let up = tokio::spawn(uplink(q_rd, g_wr, line.clone()));
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

/// The device-to-gateway half of a relay: counts the device's bytes and, as long as the
/// line is up, its records by class.
async fn uplink(
    mut device: tokio::net::tcp::OwnedReadHalf,
    mut gateway: tokio::net::tcp::OwnedWriteHalf,
    line: Arc<Line>,
) {
    let mut buf = [0u8; 4096];
    let mut message = Vec::new();
    loop {
        let n = match device.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        line.device_bytes.fetch_add(n as u64, Ordering::SeqCst);
        if line.cut.load(Ordering::SeqCst) {
            continue;
        }
        for &b in &buf[..n] {
            if b != 0 {
                message.push(b);
                continue;
            }
            if let Ok(Uplink::Record { class, .. }) = wire::decode::<Uplink<'_>>(&mut message) {
                let counter = if class == Class::Critical {
                    &line.critical
                } else {
                    &line.normal
                };
                counter.fetch_add(1, Ordering::SeqCst);
            }
            message.clear();
        }
        if gateway.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The device's console (semihosting), read on its own thread: every line so far, when
/// the last one came, and whether it has closed (the firmware exited).
#[derive(Clone)]
pub struct Console(Arc<Mutex<ConsoleState>>);

struct ConsoleState {
    lines: Vec<String>,
    last: Instant,
    closed: bool,
}

impl Console {
    fn of(child: &mut Child) -> Console {
        let stdout = child.stdout.take().expect("QEMU's stdout is piped");
        let console = Console(Arc::new(Mutex::new(ConsoleState {
            lines: Vec::new(),
            last: Instant::now(),
            closed: false,
        })));
        let shared = console.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut s = shared.state();
                s.lines.push(l);
                s.last = Instant::now();
            }
            shared.state().closed = true;
        });
        console
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ConsoleState> {
        // A reader that panicked holding the lock left whole lines: still worth reading.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything the device printed so far.
    pub fn text(&self) -> String {
        self.state().lines.join("\n")
    }

    /// Whether the console has closed: the firmware exited or QEMU was killed.
    pub fn closed(&self) -> bool {
        self.state().closed
    }

    /// Console lines so far that start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        let s = self.state();
        s.lines.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// What is wrong, if anything, with a wait that began at `since`: the device exited or
    /// stalled, or the wait has been too long.
    fn trouble(&self, since: Instant) -> Option<&'static str> {
        let s = self.state();
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
    pub fn wait(&self, what: &str, f: impl FnMut() -> bool) {
        let took = self.until(what, Duration::from_millis(20), f);
        eprintln!("firmware: {what} after {:.1} s", took.as_secs_f64());
    }

    /// As `wait`, silently and polling every millisecond: for a kill that should land
    /// close to the line it waited for.
    pub fn wait_quietly(&self, what: &str, f: impl FnMut() -> bool) {
        self.until(what, Duration::from_millis(1), f);
    }

    fn until(&self, what: &str, every: Duration, mut f: impl FnMut() -> bool) -> Duration {
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
            std::thread::sleep(every);
        }
        start.elapsed()
    }
}

/// A child process, killed when its owner is dropped (whichever way a test ends).
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child's stdout, line by line, read on its own thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
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

/// The number after `key` in a console line like `... key 42 ...`.
pub fn field(line: &str, key: &str) -> u64 {
    let rest = line
        .split(&format!(" {key} "))
        .nth(1)
        .unwrap_or_else(|| panic!("no `{key}` in {line}"));
    let word = rest.split(' ').next().unwrap_or_default();
    word.parse()
        .unwrap_or_else(|e| panic!("`{key}` is not a number in {line}: {e}"))
}

/// The console lines that are neither a progress beat nor an accepted id: what is worth
/// showing of a run.
pub fn summary(console: &str) -> String {
    console
        .lines()
        .filter(|l| !l.starts_with("firmware: accepted ") && !l.starts_with("firmware: t "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The emulator's two regions, `twinhub gateway` in front of them, and a relay per device
/// line; the device's flash file lives in `dir`, QEMU's working directory.
pub struct Rig {
    _emu: Emulator,
    /// The primary region.
    pub primary: Region,
    /// The secondary region.
    pub secondary: Region,
    dir: tempfile::TempDir,
    gateway: Reap,
    gateway_out: mpsc::Receiver<String>,
    /// The device's UART (free).
    pub uart: Arc<Line>,
    /// The device's satellite line (costly, budgeted).
    pub satellite: Arc<Line>,
    ports: [u16; 2],
    /// The firmware it boots.
    pub firmware: Firmware,
    /// Last: dropped after everything that runs on it.
    _rt: tokio::runtime::Runtime,
}

impl Rig {
    /// Starts the regions, the gateway and the relays for `firmware`.
    pub fn start(firmware: Firmware) -> Rig {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let emu = rt
            .block_on(Emulator::start(EmulatorConfig::with_regions([
                "primary",
                "secondary",
            ])))
            .expect("the emulator starts");
        let (primary, secondary) = (emu["primary"].clone(), emu["secondary"].clone());
        let dir = tempfile::tempdir().expect("a temporary directory");
        let endpoints = [
            ("primary", primary.event_hubs_connection_string()),
            ("secondary", secondary.event_hubs_connection_string()),
        ];
        let outbox = "max_bytes = \"16MiB\"\nfsync = \"batch\"";
        let cfg = write_config(dir.path(), "gateway.toml", "gateway-1", outbox, &endpoints);
        let exe = twinhub_testkit::twinhub_exe().expect("the twinhub binary");
        let mut gateway = Reap(
            Command::new(exe)
                .args(["gateway", "--config"])
                .arg(&cfg)
                .args(["--listen", "tcp://127.0.0.1:0", "--drain-timeout", "30s"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("the gateway starts"),
        );
        let gateway_out = lines_of(&mut gateway.0);
        let first = gateway_out
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway prints where it listens");
        let listening: serde_json::Value =
            serde_json::from_str(&first).expect("the gateway's first line is JSON");
        let gateway_addr = listening["listening"]
            .as_str()
            .expect("the gateway says where it listens")
            .to_string();
        let uart = Arc::new(Line::default());
        let satellite = Arc::new(Line::default());
        let mut ports = [0; 2];
        for (port, line) in ports.iter_mut().zip([&uart, &satellite]) {
            // The relay keeps its listener: QEMU connects to a port that is never let go.
            let listener = rt
                .block_on(TcpListener::bind("127.0.0.1:0"))
                .expect("a relay listener");
            *port = listener.local_addr().expect("its address").port();
            rt.spawn(relay(listener, gateway_addr.clone(), line.clone()));
        }
        Rig {
            _emu: emu,
            primary,
            secondary,
            dir,
            gateway,
            gateway_out,
            uart,
            satellite,
            ports,
            firmware,
            _rt: rt,
        }
    }

    /// Boots the device on the flash file in the rig's directory (created at the first
    /// boot); kill the returned child to pull the device's power.
    pub fn boot(&self) -> (Reap, Console) {
        let mut qemu = Reap(
            Command::new("qemu-system-arm")
                .args(["-cpu", "cortex-m4", "-machine", "mps2-an386", "-nographic"])
                .args([
                    "-monitor",
                    "none",
                    "-semihosting-config",
                    "enable=on,target=native",
                ])
                .args(["-serial", &format!("tcp:127.0.0.1:{}", self.ports[0])])
                .args(["-serial", &format!("tcp:127.0.0.1:{}", self.ports[1])])
                .arg("-kernel")
                .arg(&self.firmware.elf)
                // The firmware's flash is `twinhub-flash.bin` in QEMU's working directory.
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("qemu-system-arm runs (cargo xtask setup installs it)"),
        );
        let console = Console::of(&mut qemu.0);
        (qemu, console)
    }

    /// Every record of the device's at either region, by origin id, duplicates included.
    pub fn received(&self) -> Vec<String> {
        let mut all = self.primary.records();
        all.extend(self.secondary.records());
        from_device(&all, self.firmware.device)
    }

    /// Waits (a minute at most) until every id in `want` is at a region; returns the
    /// missing.
    pub fn await_ids(&self, want: &BTreeSet<String>) -> Vec<String> {
        let start = Instant::now();
        loop {
            let got: BTreeSet<String> = self.received().into_iter().collect();
            let missing: Vec<String> = want.difference(&got).cloned().collect();
            if missing.is_empty() || start.elapsed() > Duration::from_secs(60) {
                return missing;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the gateway (it drains) and returns its final stats, having checked that it
    /// holds nothing and exits cleanly.
    pub fn stop_gateway(&mut self) -> serde_json::Value {
        let pid = self.gateway.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let stats = self
            .gateway_out
            .recv_timeout(Duration::from_secs(60))
            .expect("the gateway prints its stats");
        let stats: serde_json::Value =
            serde_json::from_str(&stats).expect("the gateway's stats are JSON");
        assert_eq!(stats["pending"], 0, "{stats}");
        let status = self.gateway.0.wait().expect("the gateway is waited for");
        assert_eq!(status.code(), Some(0));
        stats
    }
}

/// The origin ids of `device`'s records among `records`, duplicates included.
fn from_device(records: &[Record], device: &str) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r.properties.get(ORIGIN_ID))
        .filter(|id| id.split(':').next() == Some(device))
        .cloned()
        .collect()
}

/// The story both firmwares tell on one boot of fresh flash: records over the UART to the
/// primary; the UART cut until the satellite has carried critical records (normal ones
/// wait); healed, the backlog follows; then the primary region dies and the gateway fails
/// over. The device then drains and reports. Every record it accepted must reach a region
/// under its own id, no normal record may cross the satellite, and the satellite's bytes
/// must stay within the budget. Returns the device's console.
pub fn cut_then_region_loss(rig: &mut Rig) -> String {
    let (mut qemu, console) = rig.boot();
    let device = rig.firmware.device;
    let (uart, satellite) = (rig.uart.clone(), rig.satellite.clone());
    let unique = |region: &Region| {
        let ids = from_device(&region.records(), device);
        ids.into_iter().collect::<BTreeSet<_>>().len()
    };
    console.wait("records at the primary", || unique(&rig.primary) >= 5);
    assert_eq!(satellite.critical(), 0);

    uart.set_cut(true);
    console.wait("critical records over the satellite", || {
        satellite.critical() >= 2
    });
    assert_eq!(satellite.normal(), 0);

    let normal_before = uart.normal();
    uart.set_cut(false);
    console.wait("normal records over the healed UART", || {
        uart.normal() >= normal_before + 10
    });

    rig.primary.set_fault(Fault::Down);
    console.wait("records at the secondary", || unique(&rig.secondary) >= 5);

    console.wait("the firmware to finish", || console.closed());
    let status = qemu.0.wait().expect("QEMU is waited for");
    let report = console.text();
    println!("{}", summary(&report));
    assert!(
        status.success(),
        "the firmware's own checks pass:
{report}"
    );
    let counts = report
        .lines()
        .find(|l| l.starts_with("firmware: device "))
        .expect("the firmware reports its counts");
    let accepted = field(counts, "accepted");
    assert!(accepted >= 100, "the device ran its course: {counts}");
    check_lines(rig, &report);

    // Every record the device accepted is at a region under the device's own id.
    let want: BTreeSet<String> = (0..accepted).map(|s| format!("{device}:1:{s}")).collect();
    let missing = rig.await_ids(&want);
    assert!(
        missing.is_empty(),
        "records missing at both regions: {missing:?}"
    );

    // Stopping the gateway drains it; its stats count what the lines carried.
    let stats = rig.stop_gateway();
    let acks = stats["device_acks"].as_u64().expect("the stats count acks");
    assert!(acks >= accepted, "{stats}");
    report
}

/// The bytes the device counted on each line are the bytes that crossed it, and the
/// satellite carried no normal record and no more than the budget.
fn check_lines(rig: &Rig, report: &str) {
    let lines = report
        .lines()
        .find(|l| l.contains("satellite bytes"))
        .expect("the firmware reports its lines' bytes");
    assert_eq!(
        field(lines, "bytes"),
        rig.uart.device_bytes(),
        "the UART bytes the device counted are the bytes that crossed"
    );
    let sat_bytes = rig.satellite.device_bytes();
    assert_eq!(
        field(&lines.replace("satellite bytes", "sat"), "sat"),
        sat_bytes
    );
    assert!(
        sat_bytes <= SAT_BUDGET,
        "satellite bytes {sat_bytes} within the budget {SAT_BUDGET}"
    );
    assert_eq!(rig.satellite.normal(), 0);
}
