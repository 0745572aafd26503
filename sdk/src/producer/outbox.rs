//! The trait the driver needs of its store, and how such a store fails.

use std::io;
use std::sync::Arc;

use twinhub_core::{LinkSpend, Store, StoreError};

/// A store the driver can make durable: group commit calls [`Outbox::sync`] once per group
/// of accepted records, before their `send`s return.
pub trait Outbox: Store + Send + 'static {
    /// Makes everything accepted so far durable (per the store's policy).
    fn sync(&mut self) -> Result<(), OutboxFailure> {
        Ok(())
    }
    /// Keeps budgeted links' spend across restarts, if this outbox persists anything.
    fn save_link_spend(&mut self, _spends: &[(&str, LinkSpend)]) -> Result<(), OutboxFailure> {
        Ok(())
    }
    /// The spend a previous run saved, by link name.
    fn load_link_spend(&mut self) -> Vec<(String, LinkSpend)> {
        Vec::new()
    }
}

impl Outbox for crate::memstore::MemStore {}

/// Why an outbox could not store a record, make it durable, or keep the links' spend.
///
/// Cheap to clone: one failed sync answers every send of its group commit.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxFailure {
    /// The store refused the operation: full, a corrupt frame, or its medium failed.
    #[error("outbox store failed: {0}")]
    Store(#[from] StoreError),
    /// The disk outbox failed on a named file or directory.
    #[error(transparent)]
    Disk(Arc<crate::disk::OutboxError>),
    /// Another outbox's I/O failed.
    #[error("outbox I/O failed: {0}")]
    Io(Arc<io::Error>),
}

impl From<crate::disk::OutboxError> for OutboxFailure {
    fn from(e: crate::disk::OutboxError) -> Self {
        OutboxFailure::Disk(Arc::new(e))
    }
}

impl From<io::Error> for OutboxFailure {
    fn from(e: io::Error) -> Self {
        OutboxFailure::Io(Arc::new(e))
    }
}

/// Equal when they name the same problem: the same store error, or the same I/O error kind
/// and message (I/O errors carry no identity of their own).
impl PartialEq for OutboxFailure {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (OutboxFailure::Store(a), OutboxFailure::Store(b)) => a == b,
            (OutboxFailure::Disk(a), OutboxFailure::Disk(b)) => a.to_string() == b.to_string(),
            (OutboxFailure::Io(a), OutboxFailure::Io(b)) => {
                a.kind() == b.kind() && a.to_string() == b.to_string()
            }
            _ => false,
        }
    }
}

impl Eq for OutboxFailure {}
