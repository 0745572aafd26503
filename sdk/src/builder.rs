//! Building a producer from a configuration: outbox, transports, engine.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use twinhub_core::{LinkSpend, RecordInfo, RecordKey, RecordMeta, Store, StoreError};

use crate::config::SdkConfig;
use crate::config::{ConfigError, ErrorKind};
use crate::disk::{DiskStore, OutboxError, Recovery};
use crate::epoch::{self, EpochError};
use crate::memstore::MemStore;
use crate::producer::{Outbox, OutboxFailure, Parts, PartsError, Producer};
use crate::spec::{LinkSpec, OutboxSpec};
use crate::transport::{self, SharedTransport, TransportError};

/// Why a producer could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The disk outbox could not be opened. (Its message already starts with "outbox:".)
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A transport could not be set up (TLS roots, CA file, client).
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The memory outbox's `state_dir` could not be created, read or written; no record
    /// was accepted.
    #[error("outbox state_dir: {0}")]
    State(#[from] EpochError),
    /// The parts handed to [`Producer::start`] do not fit together.
    #[error("producer parts: {0}")]
    Parts(#[from] PartsError),
}

/// The outbox a configuration asks for: in memory, or on disk.
#[derive(Debug)]
pub enum AnyOutbox {
    /// Memory only (no `outbox.path`).
    Mem(MemStore),
    /// The durable disk outbox.
    Disk(DiskStore),
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            AnyOutbox::Mem($s) => $e,
            AnyOutbox::Disk($s) => $e,
        }
    };
}

impl Store for AnyOutbox {
    fn len(&self) -> usize {
        each!(self, s => s.len())
    }
    fn capacity(&self) -> usize {
        each!(self, s => s.capacity())
    }
    fn cost(&self, frame_len: usize) -> usize {
        each!(self, s => s.cost(frame_len))
    }
    fn fits(&self, frame_len: usize) -> bool {
        each!(self, s => s.fits(frame_len))
    }
    fn append(&mut self, meta: &RecordMeta, payload: &[u8]) -> Result<(), StoreError> {
        each!(self, s => s.append(meta, payload))
    }
    fn next_after(&mut self, after: Option<RecordKey>) -> Result<Option<RecordInfo>, StoreError> {
        each!(self, s => s.next_after(after))
    }
    fn read(&mut self, key: RecordKey, out: &mut [u8]) -> Result<usize, StoreError> {
        each!(self, s => s.read(key, out))
    }
    fn remove(&mut self, key: RecordKey) -> Result<(), StoreError> {
        each!(self, s => s.remove(key))
    }
}

impl Outbox for AnyOutbox {
    fn sync(&mut self) -> Result<(), OutboxFailure> {
        match self {
            AnyOutbox::Mem(_) => Ok(()),
            AnyOutbox::Disk(d) => Ok(d.sync()?),
        }
    }
    fn save_link_spend(&mut self, spends: &[(&str, LinkSpend)]) -> Result<(), OutboxFailure> {
        match self {
            AnyOutbox::Mem(_) => Ok(()),
            AnyOutbox::Disk(d) => Ok(d.save_link_spend(spends)?),
        }
    }
    fn load_link_spend(&mut self) -> Vec<(String, LinkSpend)> {
        match self {
            AnyOutbox::Mem(_) => Vec::new(),
            AnyOutbox::Disk(d) => d.load_link_spend(),
        }
    }
}

/// Opens the outbox of `spec` and picks this start's epoch, durably, before anything can
/// be accepted:
///
/// * a disk outbox (`path`) advances the counter in its directory;
/// * a memory outbox with a `state_dir` advances the counter there
///   ([`epoch::next_epoch`]): every start gets a higher epoch than any before it, across
///   fast restarts, reboots, power loss and a clock that jumps back;
/// * a memory outbox without one draws a random epoch ([`epoch::unpersisted`]): two
///   starts share an epoch, and so repeat ids, with probability 2^-32 per pair, and epochs
///   do not grow from one start to the next. A warning says so once per process.
///
/// The memory store starts empty at every start, so the engine has no earlier record of
/// this device to keep its epoch above; only ids seen by consumers can clash.
pub fn open_outbox(spec: &OutboxSpec) -> Result<(AnyOutbox, u32, Option<Recovery>), BuildError> {
    match (&spec.path, &spec.state_dir) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            ErrorKind::Invalid,
            "outbox.state_dir",
            crate::config::STATE_DIR_WITH_PATH,
        )
        .into()),
        (Some(dir), None) => {
            let (mut disk, recovery) = DiskStore::open(dir, spec.max_bytes, spec.fsync)?;
            let epoch = disk.next_epoch()?;
            Ok((AnyOutbox::Disk(disk), epoch, Some(recovery)))
        }
        (None, state_dir) => {
            let epoch = match state_dir {
                Some(dir) => epoch::next_epoch(dir)?,
                None => epoch::unpersisted(),
            };
            let max = usize::try_from(spec.max_bytes).unwrap_or(usize::MAX);
            Ok((AnyOutbox::Mem(MemStore::new(max)), epoch, None))
        }
    }
}

/// Builds a [`Producer`] from an [`SdkConfig`].
///
/// Message ids are `device:epoch:seq`, with a new epoch at every start. Give a memory
/// outbox an `[outbox] state_dir` (or use a disk outbox) so that epochs grow and never
/// repeat across restarts; without one, each start draws a random epoch and ids are unique
/// only with high probability (see [`open_outbox`]).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = twinhub::SdkConfig::from_toml_file("twinhub.toml".as_ref())?;
/// let producer = twinhub::Producer::builder(config).build().await?;
/// let id = producer.send(b"{\"temp\":21.5}".to_vec()).await?;
/// println!("accepted {id}");
/// producer.shutdown(std::time::Duration::from_secs(10)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ProducerBuilder {
    config: SdkConfig,
    request_timeout: Duration,
    seed: Option<u64>,
    max_confirmations: usize,
}

impl Producer {
    /// Starts building a producer from a configuration.
    pub fn builder(config: SdkConfig) -> ProducerBuilder {
        ProducerBuilder {
            config,
            request_timeout: transport::DEFAULT_REQUEST_TIMEOUT,
            seed: None,
            max_confirmations: crate::producer::DEFAULT_MAX_CONFIRMATIONS,
        }
    }
}

impl ProducerBuilder {
    /// How long one send may wait for a hub's answer (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The most [`Producer::send_confirmed`] tickets outstanding at once (default
    /// [`DEFAULT_MAX_CONFIRMATIONS`](crate::producer::DEFAULT_MAX_CONFIRMATIONS)); see
    /// [`Parts::max_confirmations`]. Zero is refused by `build`.
    pub fn max_confirmations(mut self, max: usize) -> Self {
        self.max_confirmations = max;
        self
    }

    /// Fixes the jitter seed (default: from the clock and the device id).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Opens the outbox (recovering what it holds), takes this start's epoch (see
    /// [`open_outbox`]: durable with a disk outbox or an `[outbox] state_dir`, random
    /// otherwise), builds the transports and starts the driver on the current tokio
    /// runtime.
    pub async fn build(self) -> Result<Producer, BuildError> {
        let engine = self.config.engine_config()?;
        let tls = transport::tls_config(self.config.ca_file.as_deref())?;
        let links = if self.config.links.is_empty() {
            vec![default_link()]
        } else {
            self.config.links.clone()
        };
        let mut transports: Vec<Vec<SharedTransport>> = Vec::new();
        for endpoint in &self.config.endpoints {
            let mut per_link = Vec::new();
            for link in &links {
                per_link.push(transport::build_with_timeout(
                    endpoint,
                    link,
                    engine.device_id(),
                    tls.clone(),
                    self.request_timeout,
                )?);
            }
            transports.push(per_link);
        }
        let (outbox, epoch, recovery) = open_outbox(&self.config.outbox)?;
        if let Some(r) = &recovery {
            tracing::info!(?r, "outbox recovered");
        }
        let seed = self.seed.unwrap_or_else(|| {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ u64::from(epoch).rotate_left(32)
        });
        Producer::start(Parts {
            config: engine,
            outbox,
            epoch,
            transports,
            seed,
            max_confirmations: self.max_confirmations,
        })
    }
}

fn default_link() -> LinkSpec {
    LinkSpec {
        name: "default".into(),
        cost: twinhub_core::Cost::Free,
        budget: None,
        allow: twinhub_core::ClassSet::ALL,
        arm_after: Duration::ZERO,
        bind: None,
    }
}
