//! The fault switch: what a region (or a proxied service) does to its clients right now.
//!
//! A [`FaultSwitch`] holds one region-wide [`Fault`] and optional per-source-address
//! overrides, so a test can cut the link of a producer bound to 127.0.0.3 while the same
//! producer's link from 127.0.0.2 still works. Proxies and the HTTP layer read it on every
//! connection, every forwarded chunk and every request, so a change takes effect at once,
//! existing connections included.
//!
//! The IoT Hub endpoint also reads per-device overrides ([`FaultSwitch::set_for_device`]):
//! IoT Hub's own ways of turning a device away, which an SDK must survive without mistaking
//! them for a region outage ([`Fault::IotHubRefuse`], [`Fault::IotHubThrottle`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

/// One fault mode. JSON form (admin API): `{"mode":"down"}`, `{"mode":"latency","ms":200}`,
/// `{"mode":"flap","period_ms":1000}`, `{"mode":"http-429","retry_after_s":2}`,
/// `{"mode":"http-403","reason":"quota-exceeded"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// Healthy: traffic passes.
    Up,
    /// New connections are reset right after accept (the client sees a reset, as from a
    /// dead host's load balancer) and every open connection is cut (reset) at once.
    Down,
    /// Connections are accepted and bytes are read, but nothing is ever answered or
    /// forwarded; open connections go silent too. Clients only notice by timing out.
    Blackhole,
    /// Every HTTP request is answered `503 Service Unavailable` (HTTP listener only; MQTT and
    /// raw proxies pass traffic).
    #[serde(rename = "http-503")]
    Http503,
    /// Every HTTP request is answered `429 Too Many Requests` with `Retry-After` (HTTP
    /// listener only).
    #[serde(rename = "http-429")]
    Http429 {
        /// Seconds sent in `Retry-After`.
        #[serde(default = "default_retry_after")]
        retry_after_s: u32,
    },
    /// Every HTTP request is answered `403 Forbidden` with the error text Service Bus and
    /// Event Hubs use for `reason` (HTTP listener only). JSON:
    /// `{"mode":"http-403","reason":"quota-exceeded"}`.
    #[serde(rename = "http-403")]
    Http403 {
        /// Which 403 the service means.
        reason: Forbidden,
    },
    /// Every chunk of bytes, in each direction, is delayed by this many milliseconds.
    Latency {
        /// One-way delay added to each direction.
        ms: u64,
    },
    /// Alternates between down and up every `period_ms`, starting down.
    Flap {
        /// Length of each down and each up phase.
        period_ms: u64,
    },
    /// IoT Hub endpoint only: connections are accepted, but every publish is refused the
    /// way IoT Hub refuses a message over MQTT: the connection is closed, no PUBACK.
    IotHubRefuse,
    /// IoT Hub endpoint only: each PUBACK is held back `delay_ms`; after `acks` delayed
    /// acknowledgements the next publish closes the connection (IoT Hub throttles by
    /// shaping traffic first, then disconnecting).
    IotHubThrottle {
        /// Delay added before each PUBACK.
        #[serde(default = "default_throttle_delay")]
        delay_ms: u64,
        /// Delayed acknowledgements per connection before the close.
        #[serde(default = "default_throttle_acks")]
        acks: u32,
    },
}

/// The reasons a Service Bus / Event Hubs send is answered 403 (the REST batch send
/// documents 403 as "quota exceeded or message too large"; a rule without `Send` rights
/// or a network rule is the third case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Forbidden {
    /// The namespace or entity is over a quota.
    QuotaExceeded,
    /// The publication is over the size limit.
    MessageTooLarge,
    /// The credentials do not grant sending (or a network rule refuses the client).
    Denied,
}

impl Forbidden {
    /// The error text sent in the response's `<Detail>`.
    pub fn detail(self) -> &'static str {
        match self {
            Forbidden::QuotaExceeded => {
                "injected fault: QuotaExceeded: the namespace has exceeded its quota"
            }
            Forbidden::MessageTooLarge => {
                "injected fault: the message size exceeds the limit allowed for this entity"
            }
            Forbidden::Denied => {
                "injected fault: 'Send' claim(s) are required to perform this operation"
            }
        }
    }
}

fn default_throttle_delay() -> u64 {
    1000
}

fn default_throttle_acks() -> u32 {
    3
}

fn default_retry_after() -> u32 {
    1
}

impl Fault {
    /// Refuses parameters that would make the switch meaningless (a zero flap period).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Fault::Flap { period_ms: 0 } => Err("flap `period_ms` must be at least 1".into()),
            Fault::Latency { ms } if *ms > 3_600_000 => {
                Err("latency `ms` must be at most one hour".into())
            }
            Fault::IotHubThrottle { delay_ms, .. } if *delay_ms > 3_600_000 => {
                Err("throttle `delay_ms` must be at most one hour".into())
            }
            _ => Ok(()),
        }
    }
}

impl Fault {
    /// True for the IoT Hub device-level modes, the only ones a device override may hold.
    pub fn is_iot_hub(&self) -> bool {
        matches!(self, Fault::IotHubRefuse | Fault::IotHubThrottle { .. })
    }
}

/// What the connection-level layers do with traffic from one source right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Forward bytes, after an optional delay.
    Pass(Option<Duration>),
    /// Reset.
    Cut,
    /// Swallow.
    Blackhole,
}

#[derive(Debug, Clone)]
struct Setting {
    fault: Fault,
    since: Instant,
}

#[derive(Debug, Clone)]
pub(crate) struct State {
    region: Setting,
    per_source: HashMap<IpAddr, Setting>,
    per_device: HashMap<String, Fault>,
}

impl State {
    fn setting(&self, source: IpAddr) -> &Setting {
        self.per_source.get(&source).unwrap_or(&self.region)
    }

    /// The fault in force for `source`, with flap resolved to `Down` or `Up` at `now`, and
    /// when that resolution next changes.
    fn resolve(&self, source: IpAddr, now: Instant) -> (Fault, Option<Instant>) {
        let s = self.setting(source);
        match s.fault {
            Fault::Flap { period_ms } => {
                let period = period_ms.max(1);
                let elapsed = now.saturating_duration_since(s.since).as_millis();
                let phase = elapsed / u128::from(period);
                let next_ms = (phase + 1).saturating_mul(u128::from(period));
                let next =
                    s.since + Duration::from_millis(u64::try_from(next_ms).unwrap_or(u64::MAX / 2));
                let fault = if phase.is_multiple_of(2) {
                    Fault::Down
                } else {
                    Fault::Up
                };
                (fault, Some(next))
            }
            other => (other, None),
        }
    }
}

/// A runtime-settable fault for one region or proxy. Cloning shares the switch.
#[derive(Clone)]
pub struct FaultSwitch {
    tx: Arc<watch::Sender<State>>,
    /// HTTP requests answered with an injected status (503, 429).
    statuses: Arc<AtomicU64>,
}

impl std::fmt::Debug for FaultSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.tx.borrow();
        f.debug_struct("FaultSwitch")
            .field("region", &state.region.fault)
            .field("per_source", &state.per_source.len())
            .finish()
    }
}

impl Default for FaultSwitch {
    fn default() -> Self {
        FaultSwitch::new()
    }
}

impl FaultSwitch {
    /// A switch that starts `up`.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(State {
            region: Setting {
                fault: Fault::Up,
                since: Instant::now(),
            },
            per_source: HashMap::new(),
            per_device: HashMap::new(),
        });
        FaultSwitch {
            tx: Arc::new(tx),
            statuses: Arc::default(),
        }
    }

    /// How many HTTP requests this switch has answered with an injected status (503 or
    /// 429) so far: lets a test wait for a client to have been refused, not for a time.
    pub fn injected_statuses(&self) -> u64 {
        self.statuses.load(Ordering::Relaxed)
    }

    pub(crate) fn count_injected_status(&self) {
        self.statuses.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the region-wide fault. `Up` also clears every per-source and per-device
    /// override, so `set(Fault::Up)` always means "fully healthy".
    pub fn set(&self, fault: Fault) {
        let since = Instant::now();
        self.tx.send_modify(|s| {
            s.region = Setting { fault, since };
            if fault == Fault::Up {
                s.per_source.clear();
                s.per_device.clear();
            }
        });
    }

    /// Sets an IoT Hub device-level fault for one device id; `Up` removes it. Other modes
    /// are refused: a device override only changes how the IoT Hub endpoint treats it.
    pub fn set_for_device(&self, device: &str, fault: Fault) -> Result<(), String> {
        if fault != Fault::Up && !fault.is_iot_hub() {
            return Err(format!(
                "a device fault must be `up`, `iot-hub-refuse` or `iot-hub-throttle`, not {fault:?}"
            ));
        }
        self.tx.send_modify(|s| {
            if fault == Fault::Up {
                s.per_device.remove(device);
            } else {
                s.per_device.insert(device.to_string(), fault);
            }
        });
        Ok(())
    }

    /// The per-device overrides as set, sorted by device id.
    pub fn device_faults(&self) -> Vec<(String, Fault)> {
        let mut v: Vec<_> = self
            .tx
            .borrow()
            .per_device
            .iter()
            .map(|(d, f)| (d.clone(), *f))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// What the IoT Hub endpoint applies to `device` connected from `source`: the device's
    /// override, else the source's or region's fault (flap resolved).
    pub fn iot_hub_fault(&self, source: IpAddr, device: &str) -> Fault {
        let state = self.tx.borrow();
        match state.per_device.get(device) {
            Some(f) => *f,
            None => state.resolve(source, Instant::now()).0,
        }
    }

    /// Sets a fault for one source address only, overriding the region-wide one for it.
    /// `Up` removes the override (the source follows the region-wide fault again).
    pub fn set_for(&self, source: IpAddr, fault: Fault) {
        let since = Instant::now();
        self.tx.send_modify(|s| {
            if fault == Fault::Up {
                s.per_source.remove(&source);
            } else {
                s.per_source.insert(source, Setting { fault, since });
            }
        });
    }

    /// Back to `up` everywhere.
    pub fn clear(&self) {
        self.set(Fault::Up);
    }

    /// The region-wide fault as set (flap unresolved).
    pub fn region_fault(&self) -> Fault {
        self.tx.borrow().region.fault
    }

    /// The per-source overrides as set.
    pub fn source_faults(&self) -> Vec<(IpAddr, Fault)> {
        let mut v: Vec<_> = self
            .tx
            .borrow()
            .per_source
            .iter()
            .map(|(ip, s)| (*ip, s.fault))
            .collect();
        v.sort_by_key(|(ip, _)| *ip);
        v
    }

    /// The fault in force for `source` now (an override, else the region-wide one), with
    /// `flap` resolved to its current phase (`Down` or `Up`).
    pub fn effective(&self, source: IpAddr) -> Fault {
        self.tx.borrow().resolve(source, Instant::now()).0
    }

    /// Connection-level action for `source` now, and when it may change by itself (flap).
    pub(crate) fn action(&self, source: IpAddr) -> (Action, Option<Instant>) {
        let (fault, next) = self.tx.borrow().resolve(source, Instant::now());
        let action = match fault {
            Fault::Down => Action::Cut,
            Fault::Blackhole => Action::Blackhole,
            Fault::Latency { ms } => Action::Pass(Some(Duration::from_millis(ms))),
            Fault::Up
            | Fault::Http503
            | Fault::Http403 { .. }
            | Fault::Http429 { .. }
            | Fault::Flap { .. }
            | Fault::IotHubRefuse
            | Fault::IotHubThrottle { .. } => Action::Pass(None),
        };
        (action, next)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<State> {
        self.tx.subscribe()
    }
}

/// The body of `POST /_admin/regions/{name}/fault`: a [`Fault`] plus an optional `source`
/// or `device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRequest {
    /// The fault.
    pub fault: Fault,
    /// Only for this client source address, if given.
    pub source: Option<IpAddr>,
    /// Only for this IoT Hub device id, if given (IoT Hub modes and `up` only).
    pub device: Option<String>,
}

impl FaultRequest {
    /// Parses `{"mode": ..., params..., "source": "127.0.0.3"}` or
    /// `{"mode": "iot-hub-refuse", "device": "meter$7"}`; errors name the problem.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        let mut value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("fault body is not JSON: {e}"))?;
        let obj = value
            .as_object_mut()
            .ok_or_else(|| "fault body must be a JSON object".to_string())?;
        let source = match obj.remove("source") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| format!("`source` {s:?} is not an IP address"))?,
            ),
            Some(_) => return Err("`source` must be a string IP address".into()),
        };
        let device = match obj.remove("device") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(d)) if !d.is_empty() => Some(d),
            Some(_) => return Err("`device` must be a non-empty string".into()),
        };
        if source.is_some() && device.is_some() {
            return Err("give `source` or `device`, not both".into());
        }
        let keys: Vec<String> = obj.keys().cloned().collect();
        let fault: Fault = serde_json::from_value(value).map_err(|e| format!("bad fault: {e}"))?;
        // serde ignores extra fields next to a unit variant's tag; refuse them by name.
        let known = serde_json::to_value(fault).map_err(|e| e.to_string())?;
        if let Some(k) = keys.iter().find(|k| known.get(k.as_str()).is_none()) {
            return Err(format!("unknown field `{k}` for this fault mode"));
        }
        fault.validate()?;
        if device.is_some() && fault != Fault::Up && !fault.is_iot_hub() {
            return Err(
                "a `device` fault must be `up`, `iot-hub-refuse` or `iot-hub-throttle`".into(),
            );
        }
        Ok(FaultRequest {
            fault,
            source,
            device,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    #[test]
    fn json_forms() {
        let r = FaultRequest::from_json(br#"{"mode":"down"}"#).unwrap();
        assert_eq!(r.fault, Fault::Down);
        assert_eq!(r.source, None);
        let r = FaultRequest::from_json(br#"{"mode":"latency","ms":200,"source":"127.0.0.3"}"#)
            .unwrap();
        assert_eq!(r.fault, Fault::Latency { ms: 200 });
        assert_eq!(r.source, Some(B));
        let r = FaultRequest::from_json(br#"{"mode":"http-429"}"#).unwrap();
        assert_eq!(r.fault, Fault::Http429 { retry_after_s: 1 });
        assert_eq!(
            FaultRequest::from_json(br#"{"mode":"flap","period_ms":1000}"#)
                .unwrap()
                .fault,
            Fault::Flap { period_ms: 1000 }
        );
        assert_eq!(
            FaultRequest::from_json(br#"{"mode":"http-503"}"#)
                .unwrap()
                .fault,
            Fault::Http503
        );
        assert_eq!(
            FaultRequest::from_json(br#"{"mode":"http-403","reason":"message-too-large"}"#)
                .unwrap()
                .fault,
            Fault::Http403 {
                reason: Forbidden::MessageTooLarge
            }
        );
        for bad in [
            &br#"{"mode":"http-403"}"#[..],
            br#"{"mode":"http-403","reason":"sideways"}"#,
            br#"{"mode":"sideways"}"#,
            br#"{"mode":"latency"}"#,
            br#"{"mode":"down","extra":1}"#,
            br#"{"mode":"flap","period_ms":0}"#,
            br#"{"mode":"down","source":"nope"}"#,
            br#"[1]"#,
            b"{",
        ] {
            assert!(
                FaultRequest::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn device_faults() {
        let r =
            FaultRequest::from_json(br#"{"mode":"iot-hub-refuse","device":"meter$7"}"#).unwrap();
        assert_eq!(r.fault, Fault::IotHubRefuse);
        assert_eq!(r.device.as_deref(), Some("meter$7"));
        let r = FaultRequest::from_json(br#"{"mode":"iot-hub-throttle","delay_ms":50}"#).unwrap();
        assert_eq!(
            r.fault,
            Fault::IotHubThrottle {
                delay_ms: 50,
                acks: 3
            }
        );
        for bad in [
            &br#"{"mode":"down","device":"d"}"#[..],
            br#"{"mode":"iot-hub-refuse","device":""}"#,
            br#"{"mode":"iot-hub-refuse","device":"d","source":"127.0.0.2"}"#,
        ] {
            assert!(
                FaultRequest::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let s = FaultSwitch::new();
        s.set_for_device("d", Fault::IotHubRefuse).unwrap();
        assert!(s.set_for_device("d", Fault::Down).is_err());
        assert_eq!(s.iot_hub_fault(A, "d"), Fault::IotHubRefuse);
        assert_eq!(s.iot_hub_fault(A, "e"), Fault::Up);
        s.set_for(A, Fault::IotHubRefuse);
        assert_eq!(s.iot_hub_fault(A, "e"), Fault::IotHubRefuse);
        assert_eq!(
            s.action(A).0,
            Action::Pass(None),
            "TCP traffic still passes"
        );
        s.set(Fault::Up);
        assert!(s.device_faults().is_empty());
    }

    #[test]
    fn per_source_overrides_region() {
        let s = FaultSwitch::new();
        s.set_for(B, Fault::Down);
        assert_eq!(s.effective(A), Fault::Up);
        assert_eq!(s.effective(B), Fault::Down);
        s.set(Fault::Blackhole);
        assert_eq!(s.effective(A), Fault::Blackhole);
        assert_eq!(s.effective(B), Fault::Down);
        s.set_for(B, Fault::Up);
        assert_eq!(s.effective(B), Fault::Blackhole);
        s.set_for(A, Fault::Latency { ms: 5 });
        s.set(Fault::Up);
        assert_eq!(s.effective(A), Fault::Up, "up clears overrides");
        assert!(s.source_faults().is_empty());
    }

    #[test]
    fn flap_alternates_starting_down() {
        let state = State {
            region: Setting {
                fault: Fault::Flap { period_ms: 100 },
                since: Instant::now(),
            },
            per_source: HashMap::new(),
            per_device: HashMap::new(),
        };
        let t0 = state.region.since;
        let at = |ms| state.resolve(A, t0 + Duration::from_millis(ms));
        assert_eq!(at(0).0, Fault::Down);
        assert_eq!(at(99).0, Fault::Down);
        assert_eq!(at(100).0, Fault::Up);
        assert_eq!(at(250).0, Fault::Down);
        assert_eq!(at(250).1, Some(t0 + Duration::from_millis(300)));
    }
}
