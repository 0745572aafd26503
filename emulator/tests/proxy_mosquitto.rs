//! Proxy mode: the fault switch in front of a real mosquitto that this test starts itself
//! on a free port (never a system broker on 1883).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use twinhub_emulator::{Emulator, EmulatorConfig, Fault, FaultProxy};

/// The broker process, killed when the test ends however it ends.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("mosquitto"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    on_path
        .or_else(|| {
            ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .expect("mosquitto is not installed; `cargo xtask setup` installs it")
}

async fn start_mosquitto() -> Mosquitto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let child = Command::new(mosquitto_binary())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let m = Mosquitto {
        child,
        addr,
        _dir: dir,
    };
    let up = eventually(T, || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(up, "mosquitto did not start listening on {addr}");
    m
}

#[tokio::test]
async fn proxy_in_front_of_mosquitto_goes_down_and_up() {
    let broker = start_mosquitto().await;
    let proxy = FaultProxy::start("127.0.0.1:0".parse().unwrap(), broker.addr)
        .await
        .unwrap();
    assert_eq!(proxy.upstream(), broker.addr);
    mqtt_v4_publish(proxy.addr(), "p1", "t", b"before".to_vec(), T)
        .await
        .unwrap();
    // MQTT 5 passes through unchanged as well.
    mqtt_v5_publish(
        proxy.addr(),
        "p5",
        "t",
        b"v5".to_vec(),
        &[("message-id", "x")],
        T,
    )
    .await
    .unwrap();

    proxy.switch().set(Fault::Down);
    let e = mqtt_v4_publish(proxy.addr(), "p2", "t", b"during".to_vec(), T)
        .await
        .unwrap_err();
    assert_ne!(e, "timed out", "down answers at once");
    // The broker itself is fine: only the path through the switch is cut.
    mqtt_v4_publish(broker.addr, "direct", "t", b"direct".to_vec(), T)
        .await
        .unwrap();

    proxy.switch().set(Fault::Blackhole);
    assert_eq!(
        mqtt_v4_publish(
            proxy.addr(),
            "p3",
            "t",
            b"bh".to_vec(),
            Duration::from_millis(400)
        )
        .await
        .unwrap_err(),
        "timed out"
    );

    proxy.switch().set(Fault::Up);
    mqtt_v4_publish(proxy.addr(), "p4", "t", b"after".to_vec(), T)
        .await
        .unwrap();
}

#[tokio::test]
async fn emulator_config_proxy_is_switchable_from_the_admin_api() {
    let broker = start_mosquitto().await;
    let emu = Emulator::start(EmulatorConfig::empty().proxy("mosquitto", broker.addr))
        .await
        .unwrap();
    let proxy = emu.proxy("mosquitto").unwrap();
    assert_eq!(
        emu.start_info()["proxies"]["mosquitto"],
        proxy.addr().to_string()
    );
    mqtt_v4_publish(proxy.addr(), "a", "t", b"x".to_vec(), T)
        .await
        .unwrap();
    let resp = client()
        .post(format!(
            "{}/_admin/regions/mosquitto/fault",
            emu.admin_url()
        ))
        .body(r#"{"mode":"down"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        mqtt_v4_publish(proxy.addr(), "b", "t", b"x".to_vec(), T)
            .await
            .is_err()
    );
    let resp = client()
        .post(format!(
            "{}/_admin/regions/mosquitto/fault",
            emu.admin_url()
        ))
        .body(r#"{"mode":"up"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    mqtt_v4_publish(proxy.addr(), "c", "t", b"x".to_vec(), T)
        .await
        .unwrap();
}
