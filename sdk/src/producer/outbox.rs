//! The trait the driver needs of its store.

use twinhub_core::{LinkSpend, Store};

/// A store the driver can make durable: group commit calls [`Outbox::sync`] once per group
/// of accepted records, before their `send`s return.
pub trait Outbox: Store + Send + 'static {
    /// Makes everything accepted so far durable (per the store's policy).
    fn sync(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Keeps budgeted links' spend across restarts, if this outbox persists anything.
    fn save_link_spend(&mut self, _spends: &[(&str, LinkSpend)]) -> Result<(), String> {
        Ok(())
    }
    /// The spend a previous run saved, by link name.
    fn load_link_spend(&mut self) -> Vec<(String, LinkSpend)> {
        Vec::new()
    }
}

impl Outbox for crate::memstore::MemStore {}
