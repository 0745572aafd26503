//! `twinhub send`: one record per line of standard input, through a configured producer.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use twinhub::{BuildError, SdkConfig};
use twinhub::{Class, MessageId, Producer, SendError, SendOptions, SendTicket};

/// Exit code when the drain timeout passed with records still pending.
pub const EXIT_PENDING: u8 = 3;

/// Records accepted but not yet confirmed at once; they share outbox syncs.
const PIPELINE: usize = 256;

/// Arguments of `twinhub send`.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// The producer's TOML configuration.
    #[arg(long)]
    pub config: PathBuf,
    /// Class of every record: critical, normal or bulk.
    #[arg(long, default_value = "normal", value_parser = parse_class)]
    pub class: Class,
    /// How long to wait for delivery after standard input closes, e.g. 30s, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Also write the final stats JSON to this file.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Print `accepted <line> <message id>` once each record is in the outbox, and
    /// `dropped <message id> <reason>` for each record dropped by a policy (expired,
    /// evicted, rejected); `drop-reports-missed <n>` if the event stream lagged.
    #[arg(long)]
    pub echo_ids: bool,
    /// Where a memory outbox (a config without `[outbox] path`) keeps its epoch counter,
    /// so that no restart reuses a message id. Default: the config's `[outbox] state_dir`,
    /// else $XDG_STATE_HOME/twinhub/device-<device_id>, else
    /// ~/.local/state/twinhub/device-<device_id>. When the default cannot be used, each
    /// run draws a random epoch (ids unique only with high probability) and warns. A disk
    /// outbox keeps its own counter, so this is an error with one.
    #[arg(long, verbatim_doc_comment)]
    pub state_dir: Option<PathBuf>,
}

pub(crate) fn parse_class(s: &str) -> Result<Class, String> {
    Class::from_name(s).ok_or_else(|| format!("`{s}` is not a class (critical, normal, bulk)"))
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    twinhub::config::units::parse_duration(s).map_err(|e| e.to_string())
}

/// Runs the command; returns the process exit code.
pub async fn run(args: SendArgs) -> Result<u8, String> {
    let mut config = SdkConfig::from_toml_file(&args.config).map_err(|e| e.to_string())?;
    let implicit = choose_state_dir(&mut config, args.state_dir, |k| std::env::var_os(k))?;
    let producer = match Producer::builder(config.clone()).build().await {
        Err(BuildError::State(e)) if implicit => {
            // Only the default location is optional; a directory asked for must work.
            tracing::warn!(error = %e, "cannot keep the epoch counter in the default state directory");
            config.outbox.state_dir = None;
            Producer::builder(config).build().await
        }
        built => built,
    }
    .map_err(|e| e.to_string())?;
    // Subscribed before the first record, so every drop is reported by id.
    let drops = args.echo_ids.then(|| echo_drops(producer.events()));
    let refused = forward_lines(&producer, SendOptions::class(args.class), args.echo_ids).await?;
    let mut extra = serde_json::Map::new();
    extra.insert("refused".into(), refused.into());
    let code = finish(
        &producer,
        args.drain_timeout,
        args.stats_json.as_deref(),
        extra,
    )
    .await?;
    // The driver has stopped; with the last handle gone the event stream ends, after
    // the echo has printed every drop.
    drop(producer);
    if let Some(task) = drops {
        let _ = task.await;
    }
    Ok(code)
}

/// Prints `dropped <id> <reason>` for every record the producer drops, until it stops.
fn echo_drops(
    mut events: tokio::sync::broadcast::Receiver<twinhub::Event>,
) -> tokio::task::JoinHandle<()> {
    use tokio::sync::broadcast::error::RecvError;
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(twinhub::Event::Dropped { id, reason }) => {
                    println!("dropped {id} {}", reason.name());
                }
                Ok(_) => {}
                // Which records those were is unknown: say so rather than stay silent.
                Err(RecvError::Lagged(n)) => println!("drop-reports-missed {n}"),
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// Settles where a memory outbox keeps its epoch counter: `flag`, else the config's
/// `state_dir`, else the per-user default (found through `env`). Returns whether the
/// default was chosen (it may be given up if unusable; the others may not).
fn choose_state_dir(
    config: &mut SdkConfig,
    flag: Option<PathBuf>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<bool, String> {
    if let Some(path) = &config.outbox.path {
        return match flag {
            Some(_) => Err(format!(
                "--state-dir is for a memory outbox; the disk outbox {} keeps its own epoch counter",
                path.display()
            )),
            None => Ok(false),
        };
    }
    if let Some(dir) = flag {
        config.outbox.state_dir = Some(dir);
        return Ok(false);
    }
    if config.outbox.state_dir.is_some() {
        return Ok(false);
    }
    config.outbox.state_dir = default_state_dir(&config.device_id, env);
    Ok(config.outbox.state_dir.is_some())
}

/// `$XDG_STATE_HOME/twinhub/device-<id>`, else `$HOME/.local/state/twinhub/device-<id>`
/// (the XDG base directory rules: relative values are ignored). The prefix keeps device
/// ids such as `..` from naming another directory.
fn default_state_dir(device_id: &str, env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let absolute = |k: &str| env(k).map(PathBuf::from).filter(|p| p.is_absolute());
    let base = absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|h| h.join(".local").join("state")))?;
    Some(base.join("twinhub").join(format!("device-{device_id}")))
}

/// Submits one record per line of standard input until it closes; returns how many lines
/// were refused (too large, outbox full).
pub(crate) async fn forward_lines(
    producer: &Producer,
    opts: SendOptions,
    echo_ids: bool,
) -> Result<u64, String> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut waiting: VecDeque<(u64, SendTicket)> = VecDeque::new();
    let mut refused = 0u64;
    let mut n = 0u64;
    loop {
        let room = waiting.len() < PIPELINE;
        // The oldest ticket, polled in place: acceptances are reported as they happen,
        // not only when later lines push them out of the pipeline.
        let oldest = std::future::poll_fn(|cx| match waiting.front_mut() {
            Some((_, ticket)) => std::pin::Pin::new(ticket).poll(cx),
            None => std::task::Poll::Pending,
        });
        tokio::select! {
            biased;
            outcome = oldest => {
                if let Some((line, _)) = waiting.pop_front() {
                    refused += settled(line, outcome, echo_ids)?;
                }
            }
            // `next_line` is cancel-safe: a line half read when a ticket wins is kept.
            line = lines.next_line(), if room => {
                let line = line.map_err(|e| format!("reading standard input: {e}"))?;
                let Some(line) = line else { break };
                n += 1;
                match producer.submit(line.into_bytes(), opts.clone()).await {
                    Ok(ticket) => waiting.push_back((n, ticket)),
                    Err(e) => refused += refuse(n, &e)?,
                }
            }
        }
    }
    while let Some((line, ticket)) = waiting.pop_front() {
        refused += settled(line, ticket.await, echo_ids)?;
    }
    Ok(refused)
}

/// Drains, prints the final stats as JSON (with `extra` merged in) and returns the exit
/// code: 0 when nothing is pending, [`EXIT_PENDING`] otherwise.
pub(crate) async fn finish(
    producer: &Producer,
    drain_timeout: Duration,
    stats_json: Option<&Path>,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<u8, String> {
    let drained = producer.flush(drain_timeout).await.is_ok();
    let snapshot = producer.stats();
    // Whatever is still pending stays in a disk outbox for the next run.
    let _ = producer.shutdown(Duration::from_millis(200)).await;
    let mut json = snapshot.to_json();
    for (k, v) in extra {
        json[k] = v;
    }
    let text = json.to_string();
    println!("{text}");
    if let Some(path) = stats_json {
        std::fs::write(path, format!("{text}\n"))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(if drained && snapshot.stats.pending == 0 {
        0
    } else {
        EXIT_PENDING
    })
}

/// Reports a refused line; a closed producer ends the run.
fn refuse(line: u64, e: &SendError) -> Result<u64, String> {
    match e {
        SendError::Closed | SendError::Outbox(_) => Err(format!("line {line}: {e}")),
        _ => {
            eprintln!("twinhub send: line {line} refused: {e}");
            Ok(1)
        }
    }
}

/// Reports a ticket's outcome: the id when echoing, a refusal on standard error.
fn settled(line: u64, outcome: Result<MessageId, SendError>, echo: bool) -> Result<u64, String> {
    match outcome {
        Ok(id) => {
            if echo {
                println!("accepted {line} {id}");
            }
            Ok(0)
        }
        Err(e) => refuse(line, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_config(extra: &str) -> SdkConfig {
        SdkConfig::from_toml_str(&format!(
            "device_id = \"d-1\"\n[outbox]\n{extra}\n[[endpoint]]\nname = \"h\"\nprotocol = \"http\"\nurl = \"http://127.0.0.1:9/\"\n"
        ))
        .unwrap()
    }

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_flag_then_the_config_then_the_per_user_default() {
        let home = [("HOME", "/home/u")];
        let mut c = memory_config("");
        assert!(!choose_state_dir(&mut c, Some("/s".into()), env(&home)).unwrap());
        assert_eq!(c.outbox.state_dir, Some(PathBuf::from("/s")));

        let mut c = memory_config("state_dir = \"/from/config\"");
        assert!(!choose_state_dir(&mut c, None, env(&home)).unwrap());
        assert_eq!(c.outbox.state_dir, Some(PathBuf::from("/from/config")));

        let mut c = memory_config("");
        assert!(choose_state_dir(&mut c, None, env(&home)).unwrap());
        assert_eq!(
            c.outbox.state_dir,
            Some(PathBuf::from("/home/u/.local/state/twinhub/device-d-1"))
        );

        let xdg = [("HOME", "/home/u"), ("XDG_STATE_HOME", "/xdg")];
        let mut c = memory_config("");
        assert!(choose_state_dir(&mut c, None, env(&xdg)).unwrap());
        assert_eq!(
            c.outbox.state_dir,
            Some(PathBuf::from("/xdg/twinhub/device-d-1"))
        );
    }

    #[test]
    fn no_usable_default_leaves_the_random_fallback() {
        for vars in [&[][..], &[("HOME", "relative"), ("XDG_STATE_HOME", "")][..]] {
            let mut c = memory_config("");
            assert!(!choose_state_dir(&mut c, None, env(vars)).unwrap());
            assert_eq!(c.outbox.state_dir, None);
        }
    }

    #[test]
    fn a_disk_outbox_keeps_its_own_counter() {
        let mut c = memory_config("path = \"/var/lib/o\"");
        let err = choose_state_dir(&mut c, Some("/s".into()), env(&[])).unwrap_err();
        assert!(
            err.contains("--state-dir") && err.contains("/var/lib/o"),
            "{err}"
        );
        assert!(!choose_state_dir(&mut c, None, env(&[("HOME", "/h")])).unwrap());
        assert_eq!(c.outbox.state_dir, None);
    }
}
