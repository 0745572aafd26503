//! End to end: the firmware image boots in QEMU (`mps2-an386`, a Cortex-M4), its two UARTs
//! reach `twinhub gateway` over TCP, and the gateway forwards to two emulator regions.
//!
//! The test stands between the device and the gateway on both lines (a relay per line,
//! which takes a new connection at every boot): it can cut the UART (bytes in both
//! directions are swallowed), and counts what the device puts on each line.
//!
//! - `device_records_cross_the_gateway_through_a_cut_and_a_region_loss`: one boot on fresh
//!   flash. The UART is cut until the satellite has carried critical records, healed, then
//!   the primary region dies.
//! - `device_killed_at_random_points_loses_nothing_and_spends_one_budget`: the device is
//!   killed (SIGKILL of QEMU) at seeded random points, with the UART up, then cut, then
//!   healed, and booted again each time on the same flash file, then runs to its end.
//!
//! In both, every record the device accepted must reach a region under its own id, no
//! normal record may cross the satellite, and the satellite's bytes must stay within the
//! device's budget.
//!
//! Needs `qemu-system-arm` and the `thumbv7em-none-eabihf` target (`cargo xtask setup`
//! installs both).

use std::collections::{BTreeMap, BTreeSet};
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

const ORIGIN_ID: &str = "twinhub-origin-id";
const DEVICE: &str = "sensor-7";
const SAT_BUDGET: u64 = 512;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// Builds the firmware image with its own manifest (and so its own target and runner).
fn build_firmware() -> PathBuf {
    let dir = root().join("firmware-demo");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target-dir"])
        .arg(dir.join("target"))
        .current_dir(&dir)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "the firmware builds (needs the thumbv7em-none-eabihf target: cargo xtask setup)"
    );
    dir.join("target/thumbv7em-none-eabihf/release/twinhub-firmware-demo")
}

/// What crossed one device line, counted by the test in the middle of it.
#[derive(Default)]
struct Line {
    cut: AtomicBool,
    device_bytes: AtomicU64,
    critical: AtomicU64,
    normal: AtomicU64,
}

/// Accepts QEMU's connections for one UART (one per boot) and relays each to the gateway.
async fn relay(listener: TcpListener, gateway: String, line: Arc<Line>) {
    loop {
        let Ok((qemu, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(relay_one(qemu, gateway.clone(), line.clone()));
    }
}

/// Relays one connection of QEMU's to the gateway, counting what the device sends and
/// swallowing everything while the line is cut.
async fn relay_one(qemu: TcpStream, gateway: String, line: Arc<Line>) {
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

    /// Console lines so far that start with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        let s = self.0.lock().unwrap();
        s.lines.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Polls `f` until it holds, for as long as the device makes progress; otherwise fails,
    /// showing the console.
    fn wait(&self, what: &str, f: impl FnMut() -> bool) {
        let took = self.until(what, Duration::from_millis(20), f);
        eprintln!("firmware_gateway: {what} after {:.1} s", took.as_secs_f64());
    }

    /// As `wait`, silently and polling every millisecond: for a kill that should land
    /// close to the line it waited for.
    fn wait_quietly(&self, what: &str, f: impl FnMut() -> bool) {
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

/// The emulator's two regions, `twinhub gateway` in front of them, and a relay per device
/// line; the device's flash file lives in `dir`, QEMU's working directory.
struct Rig {
    _emu: Emulator,
    primary: Region,
    secondary: Region,
    dir: tempfile::TempDir,
    gateway: Reap,
    gateway_out: mpsc::Receiver<String>,
    uart: Arc<Line>,
    satellite: Arc<Line>,
    ports: Vec<u16>,
    elf: PathBuf,
    /// Last: dropped after everything that runs on it.
    _rt: tokio::runtime::Runtime,
}

impl Rig {
    fn start() -> Rig {
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
            elf,
            _rt: rt,
        }
    }

    /// Boots the device on the flash file in `dir` (created at the first boot).
    fn boot(&self) -> (Reap, Console) {
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
                .arg(&self.elf)
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
    fn received(&self) -> Vec<String> {
        let mut all = self.primary.records();
        all.extend(self.secondary.records());
        all.iter()
            .filter_map(|r| r.properties.get(ORIGIN_ID))
            .filter(|id| id.starts_with(DEVICE))
            .cloned()
            .collect()
    }

    /// Waits (a minute at most) until every id in `want` is at a region; returns the missing.
    fn await_ids(&self, want: &BTreeSet<String>) -> Vec<String> {
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

    /// Stops the gateway (it drains) and returns its final stats.
    fn stop_gateway(&mut self) -> serde_json::Value {
        let pid = self.gateway.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let stats = self
            .gateway_out
            .recv_timeout(Duration::from_secs(60))
            .expect("the gateway prints its stats");
        let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(stats["pending"], 0, "{stats}");
        assert_eq!(self.gateway.0.wait().unwrap().code(), Some(0));
        stats
    }
}

/// The console lines that are neither a progress beat nor an accepted id: what is worth
/// showing of a run.
fn summary(console: &str) -> String {
    console
        .lines()
        .filter(|l| !l.starts_with("firmware: accepted ") && !l.starts_with("firmware: t "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn device_records_cross_the_gateway_through_a_cut_and_a_region_loss() {
    let mut rig = Rig::start();
    let (mut qemu, console) = rig.boot();
    let (primary, secondary) = (rig.primary.clone(), rig.secondary.clone());
    let (uart, satellite) = (rig.uart.clone(), rig.satellite.clone());
    let from_device = |r: &[Record]| {
        origin_ids(r)
            .into_iter()
            .filter(|id| id.starts_with(DEVICE))
            .count()
    };

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
    println!("{}", summary(&report));
    assert!(
        status.success(),
        "the firmware's own checks pass:\n{report}"
    );
    assert!(
        report.starts_with("firmware: boot epoch 1 recovered 0 "),
        "fresh flash: the first epoch, nothing recovered:\n{}",
        summary(&report)
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
    let missing = rig.await_ids(&want);
    assert!(
        missing.is_empty(),
        "records missing at both regions: {missing:?}"
    );

    // Stopping the gateway drains it; its stats count what the lines carried.
    let stats = rig.stop_gateway();
    assert!(
        stats["device_acks"].as_u64().unwrap() >= accepted,
        "{stats}"
    );
}

/// SplitMix64: the kill points come from a seed, printed so a failing run can be replayed
/// (`FIRMWARE_KILL_SEED=...`).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `range`.
    fn within(&mut self, range: std::ops::RangeInclusive<usize>) -> usize {
        range.start() + (self.next() % (range.end() - range.start() + 1) as u64) as usize
    }
}

/// What one boot of the device printed: its epoch, what it recovered, the ids it accepted.
struct Boot {
    epoch: u32,
    recovered: u64,
    /// Records in flash that did not decode at open (none expected: torn writes are
    /// skipped by the store before they get there).
    discarded: u64,
    accepted: Vec<(u32, u64)>,
}

/// Reads a boot's console: `firmware: boot epoch E recovered R ...` and every
/// `firmware: accepted E:S`.
fn parse_boot(console: &str) -> Option<Boot> {
    let first = console.lines().find(|l| l.starts_with("firmware: boot "))?;
    let accepted = console
        .lines()
        .filter_map(|l| l.strip_prefix("firmware: accepted "))
        .map(|id| {
            let (e, s) = id.split_once(':').unwrap();
            (e.parse().unwrap(), s.parse().unwrap())
        })
        .collect();
    Some(Boot {
        epoch: field(first, "epoch") as u32,
        recovered: field(first, "recovered"),
        discarded: field(first, "discarded"),
        accepted,
    })
}

/// The `epoch` and `seq` of an origin id `device:epoch:seq`.
fn id_key(id: &str) -> (u32, u64) {
    let mut parts = id.rsplitn(3, ':');
    let seq = parts.next().unwrap().parse().unwrap();
    let epoch = parts.next().unwrap().parse().unwrap();
    (epoch, seq)
}

/// How the test treats the UART during a boot it will kill.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Up: records are acked within milliseconds, so a kill mostly catches the newest.
    Up,
    /// Cut: normal records pile up in flash, critical ones take the satellite once it is
    /// armed (about 35 readings after a boot), as far as the budget lets them.
    Cut,
    /// Healed: the backlog goes out over the UART while the device is killed again.
    Healed,
}

#[test]
fn device_killed_at_random_points_loses_nothing_and_spends_one_budget() {
    let seed = std::env::var("FIRMWARE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("firmware_reboot: seed {seed} (FIRMWARE_KILL_SEED={seed} replays its kill points)");
    let mut rng = SplitMix(seed);
    let began = Instant::now();
    let mut rig = Rig::start();
    let plan = [
        [Phase::Up; 4].as_slice(),
        &[Phase::Cut; 5],
        &[Phase::Healed; 3],
    ]
    .concat();

    let mut boots: Vec<Boot> = Vec::new();
    let mut satellite_boots = 0;
    let mut first_satellite_boot = None;
    for (i, &phase) in plan.iter().enumerate() {
        rig.uart.cut.store(phase == Phase::Cut, Ordering::SeqCst);
        // How many readings the device accepts in this boot before it dies. In a cut:
        // enough for the satellite to arm (about 35), and few enough (at most 12 critical
        // ones, some 350 bytes) that one boot cannot use up the budget, so a later one
        // meets a budget an earlier boot spent.
        let readings = match phase {
            Phase::Cut => rng.within(45..=60),
            Phase::Up | Phase::Healed => rng.within(1..=25),
        };
        let sat_before = rig.satellite.device_bytes.load(Ordering::SeqCst);
        let crit_before = rig.satellite.critical.load(Ordering::SeqCst);
        let (mut qemu, console) = rig.boot();
        console.wait_quietly("readings before the kill", || {
            console.count("firmware: accepted ") >= readings
        });
        // A few milliseconds more, drawn from the seed: the kill lands anywhere in the
        // transmit, ack and flash removal that follow a reading, not only right after it.
        std::thread::sleep(Duration::from_millis(rng.within(0..=40) as u64));
        // SIGKILL: no chance to finish a flash write or say goodbye.
        qemu.0.kill().unwrap();
        qemu.0.wait().unwrap();
        console.wait_quietly("the console to close", || console.closed());
        let text = console.text();
        let boot = parse_boot(&text)
            .unwrap_or_else(|| panic!("boot {i} printed no boot line:\n{}", summary(&text)));
        let sat = rig.satellite.device_bytes.load(Ordering::SeqCst) - sat_before;
        let crit = rig.satellite.critical.load(Ordering::SeqCst) - crit_before;
        if sat > 0 {
            satellite_boots += 1;
            first_satellite_boot.get_or_insert(i);
        }
        eprintln!(
            "firmware_reboot: boot {i} ({phase:?}): epoch {} recovered {} accepted {} (killed after {readings}), satellite +{sat} B ({crit} critical records), {:.1} s in",
            boot.epoch,
            boot.recovered,
            boot.accepted.len(),
            began.elapsed().as_secs_f64()
        );
        boots.push(boot);
    }

    // The last boot runs its course on the healed UART, drains and checks itself.
    rig.uart.cut.store(false, Ordering::SeqCst);
    let (mut qemu, console) = rig.boot();
    console.wait("the last boot to finish", || console.closed());
    let status = qemu.0.wait().unwrap();
    let report = console.text();
    println!("{}", summary(&report));
    assert!(
        status.success(),
        "the firmware's own checks pass:\n{}",
        summary(&report)
    );
    let last = parse_boot(&report).expect("the last boot's line");
    assert!(last.accepted.len() >= 100, "the device ran its course");
    boots.push(last);

    // Epochs strictly grow from boot to boot, so no id is ever used twice.
    for pair in boots.windows(2) {
        assert!(
            pair[1].epoch > pair[0].epoch,
            "epoch {} after {}",
            pair[1].epoch,
            pair[0].epoch
        );
    }
    let mut accepted = BTreeSet::new();
    for b in &boots {
        for &(epoch, seq) in &b.accepted {
            assert_eq!(epoch, b.epoch, "an accepted id of another epoch");
            assert!(
                accepted.insert((epoch, seq)),
                "id {epoch}:{seq} accepted twice"
            );
        }
    }
    let recovered: u64 = boots.iter().map(|b| b.recovered).sum();
    let discarded: u64 = boots.iter().map(|b| b.discarded).sum();
    assert!(recovered > 0, "some kills caught records pending");

    // Every accepted record is at a region, under its id.
    let want: BTreeSet<String> = accepted
        .iter()
        .map(|(e, s)| format!("{DEVICE}:{e}:{s}"))
        .collect();
    let missing = rig.await_ids(&want);
    assert!(
        missing.is_empty(),
        "{} accepted records missing at both regions: {missing:?}",
        missing.len()
    );
    let received = rig.received();
    let mut copies: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    for id in &received {
        *copies.entry(id_key(id)).or_default() += 1;
    }
    // Besides the accepted records, a region may hold only what a boot appended in the
    // instant between the append and its line: that boot's next id.
    let last_seq: BTreeMap<u32, Option<u64>> = boots
        .iter()
        .map(|b| (b.epoch, b.accepted.iter().map(|k| k.1).max()))
        .collect();
    for key in copies.keys().filter(|k| !accepted.contains(k)) {
        let next = last_seq.get(&key.0).map(|last| last.map_or(0, |s| s + 1));
        assert_eq!(
            next,
            Some(key.1),
            "a record {}:{} nobody accepted reached a region",
            key.0,
            key.1
        );
    }
    let duplicates = received.len() - copies.len();

    // The satellite: critical records only, and one budget for every boot together.
    assert_eq!(rig.satellite.normal.load(Ordering::SeqCst), 0);
    let sat_bytes = rig.satellite.device_bytes.load(Ordering::SeqCst);
    assert!(
        sat_bytes <= SAT_BUDGET,
        "satellite bytes {sat_bytes} over all boots within the one budget {SAT_BUDGET}"
    );
    // Cut boots after the satellite's first use meet the spend it left: with a budget of
    // their own each would carry its critical records (at least nine a boot) again.
    let first = first_satellite_boot.expect("the satellite carried records in some cut boot");
    let cut_after = plan[first + 1..]
        .iter()
        .filter(|p| **p == Phase::Cut)
        .count();
    assert!(
        cut_after >= 2,
        "the satellite first carried records in boot {first}: too few cut boots after it"
    );

    let stats = rig.stop_gateway();
    eprintln!(
        "firmware_reboot: seed {seed}: {} kills, {} boots, {} records accepted, {} recovered at boots, {} delivered ids ({} not printed before a kill), {duplicates} duplicates at the regions, {} resent by the device and absorbed by the gateway, {discarded} discarded at open, satellite {sat_bytes} B of {SAT_BUDGET} in {satellite_boots} boots ({} critical records), {:.0} s",
        plan.len(),
        boots.len(),
        accepted.len(),
        recovered,
        copies.len(),
        copies.len() - accepted.len(),
        stats["device_resent"],
        rig.satellite.critical.load(Ordering::SeqCst),
        began.elapsed().as_secs_f64()
    );
}
