//! Live mode: real SDK producers over MQTT and Event Hubs REST against emulator regions,
//! through the fabrikam outage compressed into seconds.

use twinhub_sim::{RunOptions, Scenario, live};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_live_producers_fail_over_and_back_losing_nothing() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/fabrikam.toml");
    let s = Scenario::from_file(std::path::Path::new(path)).unwrap();
    let r = live::run(&s, 50, &RunOptions::default()).await.unwrap();
    println!("{}", r.summary());
    assert_eq!(r.devices, 50);
    assert_eq!(r.lost, 0, "{}", r.summary());
    assert_eq!(r.pending_at_end, 0, "everything was flushed");
    assert!(r.accepted > 50 * 100, "{}", r.accepted);
    assert!(r.delivered["primary"] > 0 && r.delivered["secondary"] > 0);
    // Every accepted id is accounted for by id: arrived at a region, or reported dropped.
    let arrived: u64 = r.delivered.values().sum();
    assert_eq!(arrived + r.dropped.total(), r.accepted, "{}", r.summary());
    assert_eq!(r.failover_time.count, 50, "every producer failed over");
    assert!(r.failover_time.p99_ms <= 15_000, "{:?}", r.failover_time);
    assert!(
        r.failbacks >= 50,
        "every producer failed back: {}",
        r.failbacks
    );
}

#[tokio::test]
async fn zero_live_producers_is_an_error() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/fabrikam.toml");
    let s = Scenario::from_file(std::path::Path::new(path)).unwrap();
    let e = live::run(&s, 0, &RunOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("producer"), "{e}");
}
