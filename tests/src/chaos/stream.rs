//! A stream of records through an in-process `Producer` at a fixed rate, with a plan's
//! faults applied along it.

use std::time::Duration;

use twinhub::{Event, Producer, SdkConfig, SendOptions, SendTicket};
use twinhub_testkit::Ledger;

use super::Figures;
use super::hub::Hub;
use super::plan::{Plan, Scale};
use super::tally::{await_arrivals, longest_gap, now_ms, tally};

/// Runs `plan` over `protocol`'s regions.
pub(super) async fn stream_scenario(
    protocol: &str,
    plan: Plan,
    scale: Scale,
) -> Result<Figures, String> {
    let mut hub = Hub::start(protocol).await?;
    let toml = format!(
        "device_id = \"chaos\"\n[outbox]\nmax_bytes = \"256MiB\"\n[timings]\nmin_dwell = \"5s\"\n{}{}",
        plan.links,
        hub.endpoints_toml()
    );
    let config = SdkConfig::from_toml_str(&toml).map_err(|e| e.to_string())?;
    let producer = Producer::builder(config)
        .request_timeout(Duration::from_secs(2))
        .build()
        .await
        .map_err(|e| e.to_string())?;
    // Drops are matched by the ids the producer's events name, collected from the start.
    let drops = collect_drops(producer.events());
    let n = plan.length.as_secs_f64() * f64::from(scale.rate);
    let start = tokio::time::Instant::now();
    let started_ms = now_ms();
    let mut actions = plan.actions.iter().peekable();
    let mut sub = Submitted::default();
    let mut catch_ups = 0;
    for i in 0..n as u64 {
        let due = start + Duration::from_secs_f64(i as f64 / f64::from(scale.rate));
        tokio::time::sleep_until(due).await;
        while let Some((_, action)) = actions.next_if(|(at, _)| start + *at <= due) {
            if hub.loses_log(action) {
                catch_up(&producer, &hub, &mut sub).await;
                catch_ups += 1;
            }
            hub.act(*action)?;
        }
        match producer
            .submit(format!("chaos {i}").into_bytes(), SendOptions::default())
            .await
        {
            Ok(t) => sub.tickets.push(t),
            Err(_) => sub.refused += 1,
        }
    }
    for (_, action) in actions {
        hub.act(*action)?;
    }
    sub.settle().await;
    let Submitted {
        mut ledger,
        refused,
        ..
    } = sub;
    let _ = producer.flush(Duration::from_secs(180)).await;
    let arrivals = await_arrivals(&hub, ledger.accepted(), Duration::from_secs(60)).await;
    let snapshot = producer.stats();
    // Shutting down closes the event stream, so the collector has seen every drop.
    let _ = producer.shutdown(Duration::from_secs(1)).await;
    drop(producer);
    let (dropped, missed) = drops.await.unwrap_or_default();
    for (id, reason) in dropped {
        ledger.dropped(id, reason);
    }
    ledger.missed_drop_reports(missed);
    let stats = &snapshot.stats;
    let mut f = tally(&ledger, &arrivals);
    f.refused = refused;
    f.failovers = u64::from(stats.failovers);
    f.failbacks = u64::from(stats.failbacks);
    f.recover_s = longest_gap(&arrivals.times, started_ms);
    if plan.note == "cell" {
        let json = snapshot.to_json();
        f.note = format!(
            "cell bytes {}, wan bytes {}",
            json["link_bytes"]["cell"], json["link_bytes"]["wan"]
        );
    }
    if catch_ups > 0 {
        let kills = if catch_ups == 1 {
            "1 SIGKILL, once".to_string()
        } else {
            format!("{catch_ups} SIGKILLs, each once")
        };
        f.note = format!(
            "{kills} the consumers had read what was delivered (the mock's log lives in memory only)"
        );
    }
    if let Some(note) = hub.note() {
        f.note = note.to_string();
    }
    Ok(f)
}

/// What the stream handed the producer so far.
#[derive(Default)]
struct Submitted {
    /// Tickets not yet settled.
    tickets: Vec<SendTicket>,
    /// Ids of settled tickets, delivered.
    ledger: Ledger,
    /// Records refused at the door or whose ticket ended in an error.
    refused: u64,
}

impl Submitted {
    /// Waits for every ticket handed out so far.
    async fn settle(&mut self) {
        for t in self.tickets.drain(..) {
            match t.await {
                Ok(id) => self.ledger.accept(id.to_string()),
                Err(_) => self.refused += 1,
            }
        }
    }
}

/// Before a fault that destroys a region's log, the producer delivers what it holds and
/// the consumers read it back, as a real cluster's disks and replicas would keep it. A
/// record not read back within the wait dies with the log and counts as lost.
async fn catch_up(producer: &Producer, hub: &Hub, sub: &mut Submitted) {
    // A flush that times out leaves records in the outbox: they are not at risk.
    let _ = producer.flush(Duration::from_secs(60)).await;
    sub.settle().await;
    await_arrivals(hub, sub.ledger.accepted(), Duration::from_secs(30)).await;
}

/// Collects every `Dropped` event (id and reason) until the producer is gone, and how many
/// events were missed because the stream lagged.
fn collect_drops(
    mut events: tokio::sync::broadcast::Receiver<Event>,
) -> tokio::task::JoinHandle<(Vec<(String, String)>, u64)> {
    use tokio::sync::broadcast::error::RecvError;
    tokio::spawn(async move {
        let (mut dropped, mut missed) = (Vec::new(), 0);
        loop {
            match events.recv().await {
                Ok(Event::Dropped { id, reason }) => {
                    dropped.push((id.to_string(), reason.name().to_string()));
                }
                Ok(_) => {}
                // Unknown which events were lost: none of them can excuse a missing id.
                Err(RecvError::Lagged(n)) => missed += n,
                Err(RecvError::Closed) => return (dropped, missed),
            }
        }
    })
}
