//! `twinhub gateway` as a real process against an emulator region: the device-line
//! protocol (hello, records, acks, resends, line noise) spoken by the test, and `--stdin`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use twinhub::Class;
use twinhub::wire::{self, Downlink, Uplink};
use twinhub_emulator::{Emulator, EmulatorConfig, Region};
use twinhub_testkit::write_config;

struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(dir: &Path, region: &Region) -> std::path::PathBuf {
    let endpoints = [("primary", region.event_hubs_connection_string())];
    write_config(
        dir,
        "gateway.toml",
        "gateway-1",
        "fsync = \"always\"",
        &endpoints,
    )
}

fn send(stream: &mut TcpStream, msg: &Uplink<'_>) {
    let mut out = [0u8; 256];
    let n = wire::encode(msg, &mut out).unwrap();
    stream.write_all(&out[..n]).unwrap();
}

fn answer(stream: &mut TcpStream) -> Downlink {
    let mut frame = Vec::new();
    let mut byte = [0u8];
    loop {
        stream.read_exact(&mut byte).expect("an answer");
        if byte[0] == 0 {
            return wire::decode::<Downlink>(&mut frame).unwrap();
        }
        frame.push(byte[0]);
    }
}

#[test]
fn device_line_protocol_acks_durable_records_once_each() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt
        .block_on(Emulator::start(EmulatorConfig::with_regions(["primary"])))
        .unwrap();
    let region = emu["primary"].clone();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Reap(
        Command::new(env!("CARGO_BIN_EXE_twinhub"))
            .args(["gateway", "--config"])
            .arg(config(dir.path(), &region))
            .args(["--listen", "tcp://127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(gw.0.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let addr: serde_json::Value = serde_json::from_str(&first).unwrap();
    let mut line = TcpStream::connect(addr["listening"].as_str().unwrap()).unwrap();
    line.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let record = |seq, payload: &'static [u8]| Uplink::Record {
        epoch: 4,
        seq,
        class: Class::Critical,
        payload,
    };
    // A record before the device said who it is: the gateway asks, and stores nothing.
    send(&mut line, &record(0, b"early"));
    assert_eq!(answer(&mut line), Downlink::Identify);
    // Line noise, then a zero: one bad message, and the line goes on.
    line.write_all(&[0x41, 0x42, 0x43, 0x00]).unwrap();
    send(&mut line, &Uplink::Hello { device: "probe-1" });
    send(&mut line, &record(0, b"t=21.5"));
    send(&mut line, &record(1, b"t=21.6"));
    assert_eq!(answer(&mut line), Downlink::Ack { epoch: 4, seq: 0 });
    assert_eq!(answer(&mut line), Downlink::Ack { epoch: 4, seq: 1 });
    // The ack was lost on the way: the device sends it again, the gateway acks, once stored.
    send(&mut line, &record(1, b"t=21.6"));
    assert_eq!(answer(&mut line), Downlink::Ack { epoch: 4, seq: 1 });

    let got = rt
        .block_on(
            region.wait_until(Duration::from_secs(20), "2 records".into(), |r| {
                r.len() >= 2
            }),
        )
        .unwrap();
    let origins: Vec<_> = got
        .iter()
        .map(|r| r.properties.get("twinhub-origin-id").cloned().unwrap())
        .collect();
    assert_eq!(origins, ["probe-1:4:0", "probe-1:4:1"]);
    assert_eq!(got[0].body, b"t=21.5");

    drop(line);
    let pid = gw.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let mut stats = String::new();
    out.read_line(&mut stats).unwrap();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["device_records"], 3, "{stats}");
    assert_eq!(stats["device_resent"], 1, "{stats}");
    assert_eq!(stats["device_bad_messages"], 2, "{stats}");
    assert_eq!(stats["delivered"], 2, "{stats}");
    assert_eq!(gw.0.wait().unwrap().code(), Some(0));
    assert_eq!(region.len(), 2, "nothing stored twice");
}

#[test]
fn stdin_lines_are_forwarded_and_drained() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt
        .block_on(Emulator::start(EmulatorConfig::with_regions(["primary"])))
        .unwrap();
    let region = emu["primary"].clone();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .args(["gateway", "--stdin", "--class", "bulk", "--config"])
        .arg(config(dir.path(), &region))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = gw.stdin.take().unwrap();
        for i in 0..50 {
            writeln!(stdin, "reading {i}").unwrap();
        }
    }
    let out = gw.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["delivered"], 50, "{stats}");
    assert_eq!(region.len(), 50);
}

#[test]
fn a_bad_listen_address_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = rt
        .block_on(Emulator::start(EmulatorConfig::with_regions(["primary"])))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .args(["gateway", "--config"])
        .arg(config(dir.path(), &emu["primary"]))
        .args(["--listen", "udp://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen `udp://127.0.0.1:9`"), "{err}");
}
