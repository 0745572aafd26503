//! Epochs of a producer on a memory outbox: with `[outbox] state_dir` every start gets a
//! higher epoch than any before it, even for restarts within one second and after the
//! counter file is damaged; without it, fast restarts still never repeat an id (random
//! epochs, unique with probability 1 - 2^-32 per pair of starts).
//!
//! No record needs delivering: `send` returns once the record is in the outbox, so the
//! endpoint is an address nothing listens on.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use twinhub::config::ErrorKind;
use twinhub::{BuildError, MessageId, Producer, SdkConfig};

const RESTARTS: usize = 20;
const RECORDS: usize = 5;

/// A memory outbox (no `path`), with `outbox_extra` in its `[outbox]` table.
fn config(outbox_extra: &str) -> SdkConfig {
    SdkConfig::from_toml_str(&format!(
        r#"device_id = "epoch-test"
[outbox]
max_bytes = "1MiB"
{outbox_extra}
[[endpoint]]
name = "nowhere"
protocol = "http"
url = "http://127.0.0.1:9/ingest"
"#
    ))
    .unwrap()
}

fn state_dir_line(dir: &Path) -> String {
    format!("state_dir = {:?}", dir.display().to_string())
}

/// One start: builds a producer, sends `RECORDS` records and stops it. Also returns the
/// counter file's content right after the build, before anything was sent.
async fn start_once(config: SdkConfig, state: Option<&Path>) -> (Vec<MessageId>, Option<String>) {
    let producer = Producer::builder(config).build().await.unwrap();
    let stored = state.map(|d| std::fs::read_to_string(d.join("epoch")).unwrap());
    let mut ids = Vec::new();
    for i in 0..RECORDS {
        ids.push(producer.send(format!("r{i}").into_bytes()).await.unwrap());
    }
    // Nothing can be delivered; the records are dropped with the memory outbox.
    let _ = producer.shutdown(Duration::ZERO).await;
    (ids, stored)
}

/// Each start's ids share one epoch, with sequence numbers 0, 1, ...
fn epoch_of(ids: &[MessageId]) -> u32 {
    let epoch = ids[0].epoch;
    for (i, id) in ids.iter().enumerate() {
        assert_eq!((id.epoch, id.seq), (epoch, i as u64), "{id}");
    }
    epoch
}

#[tokio::test]
async fn restarts_with_a_state_dir_never_repeat_an_id_and_epochs_grow() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut seen = HashSet::new();
    let mut epochs = Vec::new();
    for _ in 0..RESTARTS {
        let (ids, stored) = start_once(config(&state_dir_line(&state)), Some(&state)).await;
        let epoch = epoch_of(&ids);
        // The epoch was durable before the first record was accepted.
        assert_eq!(stored.unwrap().trim(), epoch.to_string());
        epochs.push(epoch);
        seen.extend(ids);
    }
    assert_eq!(seen.len(), RESTARTS * RECORDS, "distinct ids");
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]),
        "epochs grow at every start: {epochs:?}"
    );

    // A counter file damaged from outside: the counter restarts above the wall clock by a
    // margin, which stays above every epoch handed out while the clock was right and the
    // device started fewer than about a million times faster than once a second; then it
    // counts on from there.
    std::fs::write(state.join("epoch"), b"\xff\xfe garbage").unwrap();
    let mut last = *epochs.last().unwrap();
    for _ in 0..RECORDS {
        let (ids, _) = start_once(config(&state_dir_line(&state)), Some(&state)).await;
        let epoch = epoch_of(&ids);
        assert!(epoch > last, "{epoch} after {last}");
        last = epoch;
        for id in ids {
            assert!(
                seen.insert(id.clone()),
                "{id} repeated after a garbage counter"
            );
        }
    }
}

#[tokio::test]
async fn restarts_without_a_state_dir_in_one_second_never_repeat_an_id() {
    let mut seen = HashSet::new();
    let mut epochs = HashSet::new();
    for _ in 0..RESTARTS {
        let (ids, _) = start_once(config(""), None).await;
        epochs.insert(epoch_of(&ids));
        seen.extend(ids);
    }
    // Random epochs: a repeat among 20 starts has probability about 190 / 2^32.
    assert_eq!(epochs.len(), RESTARTS, "distinct epochs");
    assert_eq!(seen.len(), RESTARTS * RECORDS, "distinct ids");
}

#[tokio::test]
async fn a_state_dir_that_cannot_be_created_is_a_typed_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let state = file.join("state");
    let err = Producer::builder(config(&state_dir_line(&state)))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::State(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("outbox state_dir: cannot create directory"),
        "{text}"
    );
    assert!(text.contains(&state.display().to_string()), "{text}");
}

#[test]
fn state_dir_is_for_the_memory_outbox_only() {
    let err = SdkConfig::from_toml_str(
        "device_id = \"d\"\n[outbox]\npath = \"/tmp/o\"\nstate_dir = \"/tmp/s\"\n",
    )
    .unwrap_err();
    assert_eq!((err.kind, err.line), (ErrorKind::Invalid, Some(4)));
    assert_eq!(err.key.as_deref(), Some("outbox.state_dir"));
    assert!(err.to_string().contains("memory outbox only"), "{err}");

    let err =
        SdkConfig::from_toml_str("device_id = \"d\"\n[outbox]\nstate_dir = \"\"\n").unwrap_err();
    assert_eq!((err.kind, err.line), (ErrorKind::Invalid, Some(3)));

    // Relative to the config file's directory, like `path`.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("twinhub.toml");
    let text = "device_id = \"d\"\n[outbox]\nstate_dir = \"state\"\n[[endpoint]]\nname = \"h\"\nprotocol = \"http\"\nurl = \"http://127.0.0.1:9/\"\n";
    std::fs::write(&file, text).unwrap();
    let config = SdkConfig::from_toml_file(&file).unwrap();
    assert_eq!(config.outbox.state_dir, Some(tmp.path().join("state")));
}

#[tokio::test]
async fn a_built_spec_with_both_path_and_state_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config("");
    config.outbox.path = Some(tmp.path().join("outbox"));
    config.outbox.state_dir = Some(tmp.path().join("state"));
    let err = Producer::builder(config).build().await.unwrap_err();
    assert!(matches!(err, BuildError::Config(_)), "{err:?}");
    assert!(!tmp.path().join("state").exists());
}
