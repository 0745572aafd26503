//! `twinhub gateway`: takes records from devices over serial lines exposed as TCP (or one
//! per line of standard input), acks each once it is in the gateway's own durable outbox,
//! and forwards it through the SDK with failover.
//!
//! A device's record keeps its identity: it is forwarded with the property
//! [`ORIGIN_ID`] = `device:epoch:seq`, the id the device gave it, so consumers can dedupe
//! records a device sent twice (an ack lost on the line) the same way they dedupe the
//! gateway's own ids.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use twinhub::wire::{self, Downlink, Uplink};
use twinhub::{Class, DeviceId, Producer, SdkConfig, SendError, SendOptions, SendTicket};

use crate::send;

/// The property carrying a device record's own id.
pub const ORIGIN_ID: &str = "twinhub-origin-id";

/// Records a device line may have waiting for their acks at once.
const LINE_PIPELINE: usize = 256;

/// Ids remembered to answer a record resent after a lost ack without storing it again.
const REMEMBERED: usize = 1 << 16;

/// Longest message accepted from a device line; longer ones are dropped as line noise.
const MAX_MESSAGE: usize = 64 * 1024;

/// Arguments of `twinhub gateway`.
#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// The gateway's TOML configuration (its endpoints, links and disk outbox).
    #[arg(long)]
    pub config: PathBuf,
    /// Accept device lines here, e.g. tcp://0.0.0.0:7000 (port 0 picks a free one; the
    /// address is printed as a JSON line on standard output).
    #[arg(long, required_unless_present = "stdin", conflicts_with = "stdin")]
    pub listen: Option<String>,
    /// Take one record per line of standard input instead.
    #[arg(long)]
    pub stdin: bool,
    /// Class of each standard-input record: critical, normal or bulk.
    #[arg(long, default_value = "normal", value_parser = send::parse_class)]
    pub class: Class,
    /// How long to wait for delivery when stopping (end of input, Ctrl-C, SIGTERM).
    #[arg(long, default_value = "30s", value_parser = send::parse_duration)]
    pub drain_timeout: Duration,
    /// Also write the final stats JSON to this file.
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics, e.g. 127.0.0.1:9600 (port 0 picks a
    /// free one; the address is printed as a JSON line on standard output).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

/// Runs the command; returns the process exit code (0 drained, 3 records still pending).
pub async fn run(args: GatewayArgs) -> Result<u8, String> {
    let config = SdkConfig::from_toml_file(&args.config).map_err(|e| e.to_string())?;
    let producer = Producer::builder(config.clone())
        .build()
        .await
        .map_err(|e| e.to_string())?;
    if let Some(addr) = &args.metrics {
        let local = crate::metrics::serve(addr, &producer, &config).await?;
        // One JSON line, like `listening`: the port the OS picked.
        println!("{}", serde_json::json!({ "metrics": local.to_string() }));
        tracing::info!(%local, "serving metrics");
    }
    let mut report = serde_json::Map::new();
    if args.stdin {
        let refused = send::forward_lines(&producer, SendOptions::class(args.class), false).await?;
        report.insert("refused".into(), refused.into());
    } else {
        let addr = args.listen.as_deref().unwrap_or_default();
        let counts = listen(&producer, addr).await?;
        for (k, v) in counts.to_json() {
            report.insert(k.into(), v.into());
        }
    }
    send::finish(
        &producer,
        args.drain_timeout,
        args.stats_json.as_deref(),
        report,
    )
    .await
}

/// What the gateway saw on its device lines.
#[derive(Debug, Default)]
struct Counts {
    lines: u64,
    records: u64,
    acked: u64,
    resent: u64,
    rejected: u64,
    bad_messages: u64,
}

impl Counts {
    fn to_json(&self) -> [(&'static str, u64); 6] {
        [
            ("device_lines", self.lines),
            ("device_records", self.records),
            ("device_acks", self.acked),
            ("device_resent", self.resent),
            ("device_rejected", self.rejected),
            ("device_bad_messages", self.bad_messages),
        ]
    }
}

/// Shared by every line of the gateway.
struct Gateway {
    producer: Producer,
    /// Records already durable here, oldest first for forgetting.
    durable: Mutex<(HashSet<String>, VecDeque<String>)>,
    counts: Mutex<Counts>,
}

impl Gateway {
    fn is_durable(&self, id: &str) -> bool {
        self.durable.lock().is_ok_and(|d| d.0.contains(id))
    }

    fn remember(&self, id: String) {
        let Ok(mut d) = self.durable.lock() else {
            return;
        };
        if d.0.insert(id.clone()) {
            d.1.push_back(id);
            if d.1.len() > REMEMBERED
                && let Some(old) = d.1.pop_front()
            {
                d.0.remove(&old);
            }
        }
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
    }
}

/// Accepts device lines until Ctrl-C or SIGTERM.
async fn listen(producer: &Producer, addr: &str) -> Result<Counts, String> {
    let Some(host) = addr.strip_prefix("tcp://") else {
        return Err(format!(
            "--listen `{addr}`: expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:7000"
        ));
    };
    let listener = TcpListener::bind(host)
        .await
        .map_err(|e| format!("--listen {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--listen {addr}: {e}"))?;
    // One JSON line, so a supervisor (or a test) learns the port it asked the OS to pick.
    println!("{}", serde_json::json!({ "listening": local.to_string() }));
    tracing::info!(%local, "gateway listening for device lines");
    let gateway = Arc::new(Gateway {
        producer: producer.clone(),
        durable: Mutex::new((HashSet::new(), VecDeque::new())),
        counts: Mutex::new(Counts::default()),
    });
    let mut lines = tokio::task::JoinSet::new();
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::info!(%peer, "device line connected");
                    gateway.count(|c| c.lines += 1);
                    lines.spawn(serve(gateway.clone(), stream));
                }
                // Out of descriptors and the like: keep serving the lines already open.
                Err(e) => tracing::warn!(error = %e, "accepting a device line failed"),
            },
            _ = &mut stop => break,
        }
    }
    lines.abort_all();
    let counts = std::mem::take(&mut *gateway.counts.lock().map_err(|_| "counts poisoned")?);
    Ok(counts)
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// An answer the line's writer sends once it is known.
enum Answer {
    Now(Downlink),
    /// Ack when the record is durable, reject if it can never be.
    Stored {
        id: String,
        epoch: u32,
        seq: u64,
        ticket: SendTicket,
    },
}

/// Serves one device line: records in, acks out, in order.
async fn serve(gateway: Arc<Gateway>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let (answers, mut pending) = mpsc::channel::<Answer>(LINE_PIPELINE);
    let writer_gateway = gateway.clone();
    let writer = tokio::spawn(async move {
        let mut out = vec![0u8; 64];
        while let Some(answer) = pending.recv().await {
            let msg = match answer {
                Answer::Now(msg) => msg,
                Answer::Stored {
                    id,
                    epoch,
                    seq,
                    ticket,
                } => match ticket.await {
                    Ok(_) => {
                        writer_gateway.remember(id);
                        writer_gateway.count(|c| c.acked += 1);
                        Downlink::Ack { epoch, seq }
                    }
                    Err(SendError::TooLarge { .. }) => {
                        writer_gateway.count(|c| c.rejected += 1);
                        Downlink::Reject { epoch, seq }
                    }
                    // Full, or the outbox failed: no answer, so the device keeps the record
                    // and sends it again.
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "device record not stored");
                        continue;
                    }
                },
            };
            let Ok(n) = wire::encode(&msg, &mut out) else {
                continue;
            };
            if write.write_all(&out[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    let mut device: Option<DeviceId> = None;
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(MAX_MESSAGE as u64)
            .read_until(0, &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if buf.last() != Some(&0) {
            if n >= MAX_MESSAGE {
                // Skip the rest of an overlong message up to its zero.
                gateway.count(|c| c.bad_messages += 1);
                let mut skip = Vec::new();
                if reader.read_until(0, &mut skip).await.is_err() {
                    break;
                }
                continue;
            }
            break; // the line closed mid-message
        }
        buf.pop();
        if buf.is_empty() {
            continue;
        }
        let answer = match wire::decode::<Uplink<'_>>(&mut buf) {
            Ok(Uplink::Hello { device: name }) => {
                match DeviceId::new(name) {
                    Ok(id) => {
                        tracing::info!(device = %name, "device said hello");
                        device = Some(id);
                    }
                    Err(e) => {
                        tracing::warn!(device = %name, error = ?e, "device id refused");
                        gateway.count(|c| c.bad_messages += 1);
                    }
                }
                continue;
            }
            Ok(Uplink::Record {
                epoch,
                seq,
                class,
                payload,
            }) => {
                let Some(dev) = &device else {
                    gateway.count(|c| c.bad_messages += 1);
                    if answers.send(Answer::Now(Downlink::Identify)).await.is_err() {
                        break;
                    }
                    continue;
                };
                gateway.count(|c| c.records += 1);
                let id = format!("{}:{epoch}:{seq}", dev.as_str());
                if gateway.is_durable(&id) {
                    gateway.count(|c| {
                        c.resent += 1;
                        c.acked += 1;
                    });
                    Answer::Now(Downlink::Ack { epoch, seq })
                } else {
                    let opts = SendOptions::class(class).property(ORIGIN_ID, id.clone());
                    match gateway.producer.submit(payload.to_vec(), opts).await {
                        Ok(ticket) => Answer::Stored {
                            id,
                            epoch,
                            seq,
                            ticket,
                        },
                        Err(SendError::TooLarge { .. }) => {
                            gateway.count(|c| c.rejected += 1);
                            Answer::Now(Downlink::Reject { epoch, seq })
                        }
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "device record not stored");
                            continue;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "bad message on a device line");
                gateway.count(|c| c.bad_messages += 1);
                continue;
            }
        };
        if answers.send(answer).await.is_err() {
            break;
        }
    }
    drop(answers);
    let _ = writer.await;
}
