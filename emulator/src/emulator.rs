//! Starting and driving the emulator: [`Emulator`] and its per-region [`Region`] handles.

mod device_auth;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::admin::{self, AdminRegion, AdminState};
use crate::config::{EmulatorConfig, generate_iot_hub_key, generate_key};
use crate::fault::{Fault, FaultSwitch};
use crate::http::{self, HttpRegion, PeerMap};
use crate::iothub::{self, IotHub, IotHubEvents};
use crate::mqtt;
use crate::proxy::{self, FaultProxy, Upstream};
use crate::store::{Record, RegionStats, Store};
use crate::tls::{CaFile, DeviceCert, RunCa, TlsError};

/// Why the emulator did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener could not bind (port in use, bad address).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
    /// The JSONL file could not be opened.
    #[error("region {region}: cannot open JSONL file: {source}")]
    Jsonl {
        /// The region.
        region: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The embedded MQTT broker did not come up.
    #[error("region {region}: MQTT broker: {reason}")]
    Broker {
        /// The region.
        region: String,
        /// What failed.
        reason: String,
    },
    /// The emulator's runtime could not be created or died while starting.
    #[error("emulator runtime: {0}")]
    Runtime(String),
    /// The run's CA or a server certificate could not be made or written.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A wait for records ended at its deadline first; it carries what had arrived.
#[derive(Debug, Clone, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {wanted}; region {region} had {got} records")]
pub struct WaitTimeout {
    /// The region.
    pub region: String,
    /// What was waited for.
    pub wanted: String,
    /// How many records it had.
    pub got: usize,
    /// The deadline.
    pub timeout: Duration,
    /// Every record at the deadline.
    pub records: Vec<Record>,
}

/// One running region: addresses, credentials, fault control and what it received.
///
/// Cheap to clone; clones share the region.
#[derive(Clone)]
pub struct Region {
    name: String,
    http: SocketAddr,
    mqtt: SocketAddr,
    key_name: String,
    key: String,
    hubs: Vec<String>,
    limit: usize,
    switch: FaultSwitch,
    store: Store,
    iot_hub: SocketAddr,
    iot_hub_key: String,
    iot_hub_device: String,
    iot_hub_events: IotHubEvents,
    iot_hub_ws: SocketAddr,
    iot_hub_cert_file: std::path::PathBuf,
    iot_hub_key_file: std::path::PathBuf,
}

impl std::fmt::Debug for Region {
    // The key is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("http", &self.http)
            .field("mqtt", &self.mqtt)
            .field("iot_hub", &self.iot_hub)
            .field("hubs", &self.hubs)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Region {
    /// The region's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Public address of the HTTP ingest (Event Hubs REST and generic JSON).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// `http://{http_addr}`, for HTTP clients.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Public address of the MQTT broker (3.1.1 and 5).
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt
    }

    /// The first event hub's name (the connection string's `EntityPath`).
    pub fn event_hub(&self) -> &str {
        self.hubs.first().map(String::as_str).unwrap_or("telemetry")
    }

    /// Every event hub name the region accepts.
    pub fn event_hubs(&self) -> &[String] {
        &self.hubs
    }

    /// The SAS rule name (`SharedAccessKeyName`).
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The SAS key (`SharedAccessKey`); Event Hubs style, the text is the HMAC key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The largest publication accepted, in bytes.
    pub fn max_publication_bytes(&self) -> usize {
        self.limit
    }

    /// A ready connection string: `Endpoint=sb://{http}/;SharedAccessKeyName=..;
    /// SharedAccessKey=..;EntityPath={hub};UseDevelopmentEmulator=true`.
    /// `UseDevelopmentEmulator=true` tells the SDK to speak plain HTTP to that address.
    pub fn event_hubs_connection_string(&self) -> String {
        format!(
            "Endpoint=sb://{}/;SharedAccessKeyName={};SharedAccessKey={};EntityPath={};UseDevelopmentEmulator=true",
            self.http,
            self.key_name,
            self.key,
            self.event_hub()
        )
    }

    /// A SAS token for `sb://{http}/{hub}` valid for `ttl`, signed with the region's key by
    /// the engine's signer: what a correct client sends.
    pub fn sas_token(&self, ttl: Duration) -> String {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .saturating_add(ttl.as_secs().max(1));
        let resource = format!("sb://{}/{}", self.http, self.event_hub());
        let mut buf = vec![0u8; 256 + 3 * (resource.len() + self.key_name.len())];
        twinhub_core::sas::sign(
            &resource,
            &twinhub_core::sas::SasKey::Text(&self.key),
            Some(&self.key_name),
            expiry,
            &mut buf,
        )
        .map(str::to_string)
        .unwrap_or_default()
    }

    /// Address of the IoT Hub endpoint (MQTT 3.1.1 over TLS; port 8883 unless configured).
    pub fn iot_hub_addr(&self) -> SocketAddr {
        self.iot_hub
    }

    /// The IoT Hub host name: the endpoint's IP address as text. The server certificate
    /// names it (an IP SAN), so it is what clients put in `HostName`, the user name and
    /// the SAS scope, with no name resolution involved.
    pub fn iot_hub_host(&self) -> String {
        self.iot_hub.ip().to_string()
    }

    /// The IoT Hub signing key (base64). Any device id signed with it is accepted.
    pub fn iot_hub_key(&self) -> &str {
        &self.iot_hub_key
    }

    /// The device id of [`Region::iot_hub_connection_string`].
    pub fn iot_hub_device(&self) -> &str {
        &self.iot_hub_device
    }

    /// `HostName={ip};DeviceId={device};SharedAccessKey={key}` for the configured device.
    pub fn iot_hub_connection_string(&self) -> String {
        self.iot_hub_connection_string_for(&self.iot_hub_device)
    }

    /// A device connection string for any `device` id (all are accepted, as if registered).
    /// The endpoint's port is 8883 unless configured otherwise; a client then needs the
    /// port from [`Region::iot_hub_addr`].
    pub fn iot_hub_connection_string_for(&self, device: &str) -> String {
        format!(
            "HostName={};DeviceId={device};SharedAccessKey={}",
            self.iot_hub_host(),
            self.iot_hub_key
        )
    }

    /// A device SAS token (the MQTT password) for `device`, valid for `ttl`: scope
    /// `{host}/devices/{device}`, no key name, signed with the hub key.
    pub fn iot_hub_sas_token(&self, device: &str, ttl: Duration) -> String {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .saturating_add(ttl.as_secs().max(1));
        let resource = format!("{}/devices/{device}", self.iot_hub_host());
        let mut buf = vec![0u8; 256 + 3 * resource.len()];
        twinhub_core::sas::sign(
            &resource,
            &twinhub_core::sas::SasKey::Base64(&self.iot_hub_key),
            None,
            expiry,
            &mut buf,
        )
        .map(str::to_string)
        .unwrap_or_default()
    }

    /// What happened to IoT Hub connections so far, counted by reason.
    pub fn iot_hub_events(&self) -> &IotHubEvents {
        &self.iot_hub_events
    }

    /// The region's fault switch (shared with the admin API).
    pub fn switch(&self) -> &FaultSwitch {
        &self.switch
    }

    /// Sets the region-wide fault; `Fault::Up` also clears per-source faults.
    pub fn set_fault(&self, fault: Fault) {
        self.switch.set(fault);
    }

    /// Sets a fault for clients from `source` only; `Fault::Up` removes it.
    pub fn set_fault_for(&self, source: IpAddr, fault: Fault) {
        self.switch.set_for(source, fault);
    }

    /// Back to healthy for everyone.
    pub fn clear_faults(&self) {
        self.switch.clear();
    }

    /// Every record received, in arrival order.
    pub fn records(&self) -> Vec<Record> {
        self.store.records()
    }

    /// Number of records received.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True before anything was received.
    pub fn is_empty(&self) -> bool {
        self.store.len() == 0
    }

    /// Distinct message ids in first-arrival order.
    pub fn ids(&self) -> Vec<String> {
        self.store.ids()
    }

    /// How many times `id` was received.
    pub fn id_count(&self, id: &str) -> u64 {
        self.store.id_count(id)
    }

    /// Counters, as the admin API reports them.
    pub fn stats(&self) -> RegionStats {
        self.store.stats()
    }

    /// Forgets every record, counter and idempotency key (faults are kept).
    pub fn reset(&self) {
        self.store.reset();
        self.iot_hub_events.reset();
    }

    /// Waits until at least `n` records arrived (bounded by `timeout`).
    pub async fn wait_for_records(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Record>, WaitTimeout> {
        self.wait_until(timeout, format!("{n} records"), |r| r.len() >= n)
            .await
    }

    /// Waits until every id in `ids` was received at least once (bounded by `timeout`).
    pub async fn wait_for_ids<S: AsRef<str>>(
        &self,
        ids: &[S],
        timeout: Duration,
    ) -> Result<Vec<Record>, WaitTimeout> {
        let want: Vec<String> = ids.iter().map(|s| s.as_ref().to_string()).collect();
        self.wait_until(timeout, format!("ids {want:?}"), |records| {
            want.iter()
                .all(|w| records.iter().any(|r| r.message_id.as_deref() == Some(w)))
        })
        .await
    }

    /// Waits until `pred` holds over the records (bounded by `timeout`).
    pub async fn wait_until<F>(
        &self,
        timeout: Duration,
        wanted: String,
        pred: F,
    ) -> Result<Vec<Record>, WaitTimeout>
    where
        F: FnMut(&[Record]) -> bool,
    {
        self.store
            .wait_until(timeout, pred)
            .await
            .map_err(|records| WaitTimeout {
                region: self.name.clone(),
                wanted,
                got: records.len(),
                timeout,
                records,
            })
    }
}

/// A running emulator. Dropping it (or [`Emulator::shutdown`]) stops every listener.
///
/// It runs on its own runtime thread, so it keeps serving whatever the caller's runtime
/// does (a test blocked in a synchronous call, a current-thread runtime).
pub struct Emulator {
    admin: SocketAddr,
    regions: Vec<Region>,
    proxies: Vec<(String, FaultProxy)>,
    ca_pem: String,
    ca_file: CaFile,
    ca: Arc<RunCa>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("admin", &self.admin)
            .field("regions", &self.regions)
            .field("proxies", &self.proxies)
            .field("ca_file", &self.ca_file.path())
            .finish()
    }
}

struct Started {
    admin: SocketAddr,
    regions: Vec<Region>,
    proxies: Vec<(String, FaultProxy)>,
    ca_pem: String,
    ca_file: CaFile,
    ca: Arc<RunCa>,
}

impl Emulator {
    /// Starts every region, proxy and the admin API; returns once all of them accept
    /// connections.
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, StartError> {
        config.validate()?;
        let (ready_tx, ready_rx) = oneshot::channel::<Result<Started, StartError>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("twinhub-emulator".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("twinhub-emulator-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StartError::Runtime(e.to_string())));
                        return;
                    }
                };
                rt.block_on(async move {
                    match start_inner(config).await {
                        Ok(started) => {
                            if ready_tx.send(Ok(started)).is_ok() {
                                let _ = stop_rx.await;
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                // Dropping the runtime cancels every task and closes every socket.
                rt.shutdown_background();
                let _ = done_tx.send(());
            })
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        let started = ready_rx
            .await
            .map_err(|_| StartError::Runtime("the emulator thread died while starting".into()))??;
        Ok(Emulator {
            admin: started.admin,
            regions: started.regions,
            proxies: started.proxies,
            ca_pem: started.ca_pem,
            ca_file: started.ca_file,
            ca: started.ca,
            stop: Mutex::new(Some(stop_tx)),
            done: Mutex::new(Some(done_rx)),
        })
    }

    /// Two regions, `primary` and `secondary`, all defaults.
    pub async fn start_default() -> Result<Emulator, StartError> {
        Emulator::start(EmulatorConfig::default()).await
    }

    /// Address of the admin API.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `http://{admin}`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The run's CA certificate file (PEM): what IoT Hub clients add to trust the
    /// emulator. Removed when the emulator stops.
    pub fn ca_file(&self) -> &std::path::Path {
        self.ca_file.path()
    }

    /// The run's CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A certificate and key for `device` (subject CN = `device`) issued by the run's CA:
    /// what X.509 devices present to the IoT Hub endpoints. Any id may be issued, as any
    /// id is accepted with a SAS token.
    pub fn issue_device_cert(&self, device: &str) -> Result<DeviceCert, TlsError> {
        self.ca.device_cert(device)
    }

    /// The regions, in configuration order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region called `name`.
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// The proxy called `name` (from the config's `[[proxy]]` entries).
    pub fn proxy(&self, name: &str) -> Option<&FaultProxy> {
        self.proxies.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// Counters of every region.
    pub fn stats(&self) -> Vec<(String, RegionStats)> {
        self.regions
            .iter()
            .map(|r| (r.name.clone(), r.stats()))
            .collect()
    }

    /// Clears every region's records and faults, like `POST /_admin/reset`.
    pub fn reset(&self) {
        for r in &self.regions {
            r.reset();
            r.clear_faults();
        }
        for (_, p) in &self.proxies {
            p.switch().clear();
        }
    }

    /// The JSON the CLI prints on start: admin address, the run's `ca_file` and, per
    /// region, HTTP, MQTT and IoT Hub addresses and ready connection strings (and
    /// proxies, if any).
    pub fn start_info(&self) -> Value {
        let mut regions = Map::new();
        for r in &self.regions {
            regions.insert(
                r.name.clone(),
                json!({
                    "http": r.http.to_string(),
                    "mqtt": r.mqtt.to_string(),
                    "event_hubs_connection_string": r.event_hubs_connection_string(),
                    "iot_hub": r.iot_hub.to_string(),
                    "iot_hub_connection_string": r.iot_hub_connection_string(),
                    "iot_hub_websocket": r.iot_hub_ws.to_string(),
                    "iot_hub_x509_connection_string": r.iot_hub_x509_connection_string(),
                    "iot_hub_device_cert": r.iot_hub_cert_file.display().to_string(),
                    "iot_hub_device_key": r.iot_hub_key_file.display().to_string(),
                }),
            );
        }
        let mut info = json!({
            "admin": self.admin.to_string(),
            "ca_file": self.ca_file.path().display().to_string(),
            "regions": regions,
        });
        if !self.proxies.is_empty() {
            let proxies: Map<String, Value> = self
                .proxies
                .iter()
                .map(|(n, p)| (n.clone(), json!(p.addr().to_string())))
                .collect();
            info["proxies"] = Value::Object(proxies);
        }
        info
    }

    /// Stops everything and waits until every listener is closed.
    pub async fn shutdown(self) {
        self.signal_stop();
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(done) = done {
            let _ = done.await;
        }
    }

    fn signal_stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

impl std::ops::Index<&str> for Emulator {
    type Output = Region;

    /// `emu["primary"]`; panics with the known names if there is no such region (a test
    /// bug, not client input).
    fn index(&self, name: &str) -> &Region {
        match self.region(name) {
            Some(r) => r,
            None => {
                let known: Vec<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
                panic!("no region named {name:?}; the emulator has {known:?}")
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local(listener: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        addr: asked,
        source,
    })
}

/// What clients should dial: an unspecified bind address is advertised as loopback.
fn advertised(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

async fn start_inner(config: EmulatorConfig) -> Result<Started, StartError> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let ca = Arc::new(RunCa::new()?);
    let mut ca_file = CaFile::write(ca.pem(), config.ca_dir.as_deref())?;
    let mut regions = Vec::new();
    for (index, rc) in config.regions.iter().enumerate() {
        let store =
            Store::new(&rc.name, rc.jsonl.as_deref()).map_err(|source| StartError::Jsonl {
                region: rc.name.clone(),
                source,
            })?;
        let switch = FaultSwitch::new();
        let key = rc.key.clone().unwrap_or_else(generate_key);
        let peers: PeerMap = Arc::default();

        // Public listeners first, so their addresses are known to the HTTP layer.
        let http_asked = SocketAddr::new(config.bind, rc.http_port);
        let http_public = bind(http_asked).await?;
        let http_addr = advertised(local(&http_public, http_asked)?);
        let mqtt_asked = SocketAddr::new(config.bind, rc.mqtt_port);
        let mqtt_public = bind(mqtt_asked).await?;
        let mqtt_addr = advertised(local(&mqtt_public, mqtt_asked)?);

        // The real HTTP server on an internal loopback port, behind the proxy.
        let internal_asked = SocketAddr::new(loopback, 0);
        let http_internal = bind(internal_asked).await?;
        let http_internal_addr = local(&http_internal, internal_asked)?;
        let mut hosts = vec![
            http_addr.to_string(),
            format!("localhost:{}", http_addr.port()),
        ];
        hosts.dedup();
        let app = http::router(Arc::new(HttpRegion {
            store: store.clone(),
            key: key.clone(),
            key_name: rc.key_name.clone(),
            hubs: rc.event_hubs.clone(),
            limit: rc.limit(),
            switch: switch.clone(),
            peers: peers.clone(),
            hosts,
        }));
        tokio::spawn(async move {
            let svc = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(http_internal, svc).await {
                tracing::error!(error = %e, "HTTP ingest stopped");
            }
        });
        proxy::spawn(
            http_public,
            Upstream::Fixed(http_internal_addr),
            switch.clone(),
            Some(peers.clone()),
        );

        let broker =
            mqtt::start(store.clone(), rc.limit())
                .await
                .map_err(|e| StartError::Broker {
                    region: rc.name.clone(),
                    reason: e.to_string(),
                })?;
        proxy::spawn(
            mqtt_public,
            Upstream::Mqtt {
                v4: broker.v4,
                v5: broker.v5,
            },
            switch.clone(),
            None,
        );
        // IoT Hub: TLS on its own loopback address, behind the same fault switch.
        let iot_asked = SocketAddr::new(rc.iot_hub_addr.unwrap_or(loopback), rc.iot_hub_port);
        let iot_public = iothub::bind_loopback(rc.iot_hub_addr, rc.iot_hub_port)
            .await
            .map_err(|source| StartError::Bind {
                addr: iot_asked,
                source,
            })?;
        let iot_addr = local(&iot_public, iot_asked)?;
        let iot_internal = bind(internal_asked).await?;
        let iot_internal_addr = local(&iot_internal, internal_asked)?;
        let iot_key = rc.iot_hub_key.clone().unwrap_or_else(generate_iot_hub_key);
        let hub = Arc::new(IotHub::new(
            iot_addr.ip().to_string(),
            iot_key.clone(),
            store.clone(),
            switch.clone(),
            peers.clone(),
            rc.iot_hub_max_idle_ms.map_or(
                Duration::from_secs(iothub::MAX_IDLE_S),
                Duration::from_millis,
            ),
        ));
        let iot_hub_events = hub.events.clone();
        let server = ca.server_config(&[iot_addr.ip().to_string()])?;
        iothub::spawn(iot_internal, server.clone(), hub.clone());
        let auth = device_auth::start(
            index,
            rc,
            iot_addr.ip(),
            server,
            hub,
            &switch,
            &peers,
            &ca,
            &mut ca_file,
        )
        .await?;
        proxy::spawn(
            iot_public,
            Upstream::Fixed(iot_internal_addr),
            switch.clone(),
            Some(peers.clone()),
        );
        tracing::info!(region = %rc.name, http = %http_addr, mqtt = %mqtt_addr, iot_hub = %iot_addr, "region up");
        regions.push(Region {
            name: rc.name.clone(),
            http: http_addr,
            mqtt: mqtt_addr,
            key_name: rc.key_name.clone(),
            key,
            hubs: rc.event_hubs.clone(),
            limit: rc.limit(),
            switch,
            store,
            iot_hub: iot_addr,
            iot_hub_key: iot_key,
            iot_hub_device: rc.iot_hub_device.clone(),
            iot_hub_events,
            iot_hub_ws: auth.websocket,
            iot_hub_cert_file: auth.cert_file,
            iot_hub_key_file: auth.key_file,
        });
    }

    let mut proxies = Vec::new();
    for pc in &config.proxies {
        let listen = SocketAddr::new(config.bind, pc.port);
        let p = FaultProxy::start_with(listen, pc.upstream, FaultSwitch::new())
            .await
            .map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?;
        proxies.push((pc.name.clone(), p));
    }

    let admin_asked = SocketAddr::new(config.bind, config.admin_port);
    let admin_listener = bind(admin_asked).await?;
    let admin_addr = advertised(local(&admin_listener, admin_asked)?);
    let state = Arc::new(AdminState {
        regions: regions
            .iter()
            .map(|r| AdminRegion {
                name: r.name.clone(),
                store: r.store.clone(),
                switch: r.switch.clone(),
                iot_hub: r.iot_hub_events.clone(),
            })
            .collect(),
        proxies: proxies
            .iter()
            .map(|(n, p)| (n.clone(), p.switch().clone()))
            .collect(),
    });
    let app = admin::router(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin_listener, app).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok(Started {
        admin: admin_addr,
        regions,
        proxies,
        ca_pem: ca.pem().to_string(),
        ca_file,
        ca,
    })
}
