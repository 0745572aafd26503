//! The state a device keeps besides its records: the boot counter and the spend of each
//! budgeted link, in a `sequential-storage` map in the store's state range.
//!
//! Each save appends a new item for its key; a read finds the newest whole one. A save cut
//! by power loss leaves an item whose checksum fails, so the value before it is read: a
//! value is never lost once its save returned, and never half-written.

use core::ops::Range;

use embedded_storage::nor_flash::{MultiwriteNorFlash, NorFlash};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapConfigError, MapStorage};

use super::adapter::{Blocking, block_on};
use super::error::{OpenError, store_err};
use super::{FlashStore, MAX_WORD};
use crate::engine::LinkSpend;
use crate::store::{Persist, StoreError};
use crate::time::Duration;

/// The key of the boot counter.
const EPOCH: u16 = 0;
/// The key of link `l`'s spend is `SPEND | l`.
const SPEND: u16 = 0x100;

/// Room for one serialized key and value, padded to the largest flash word.
#[repr(align(4))]
struct ItemBuf([u8; 2 * MAX_WORD + 32]);

/// Checks that `state` can hold the map.
pub(super) fn check_range<F: NorFlash>(state: &Range<u32>) -> Result<(), OpenError> {
    if state.start >= state.end {
        return Err(OpenError::StateTooSmall);
    }
    MapConfig::<Blocking<F>>::try_new(state.clone())
        .map(|_| ())
        .map_err(|e| match e {
            MapConfigError::RangeTooSmall => OpenError::StateTooSmall,
            MapConfigError::PagesTooSmall => OpenError::TooSmallForFrames { max_frame: 0 },
            MapConfigError::WordSizeTooLarge => OpenError::WordTooLarge,
            _ => OpenError::StateNotPageAligned,
        })
}

impl<F: MultiwriteNorFlash, const N: usize> FlashStore<F, N> {
    /// Runs `op` on the state map. The map borrows the flash the queue owns and touches only
    /// the state range, so the queue's cache stays true.
    fn with_map<T>(
        &mut self,
        op: impl AsyncFnOnce(
            &mut MapStorage<u16, &mut Blocking<F>, Cache<Uncached, Uncached, Uncached, u16>>,
            &mut [u8],
        ) -> Result<T, sequential_storage::Error<F::Error>>,
    ) -> Result<T, StoreError> {
        let config = MapConfig::<&mut Blocking<F>>::try_new(self.state.clone())
            .map_err(|_| StoreError::Io)?;
        let mut map = MapStorage::new(self.queue.flash(), config, Cache::new_uncached());
        let mut buf = ItemBuf([0; 2 * MAX_WORD + 32]);
        block_on(op(&mut map, &mut buf.0)).map_err(store_err)
    }

    /// The boot counter as saved last (0 if never).
    pub(super) fn stored_epoch(&mut self) -> Result<u32, StoreError> {
        self.with_map(async |map, buf| map.fetch_item::<u32>(buf, &EPOCH).await)
            .map(|e| e.unwrap_or(0))
    }
}

impl<F: MultiwriteNorFlash, const N: usize> Persist for FlashStore<F, N> {
    /// One more than the larger of the counter saved last and the largest epoch of any record
    /// held; saved before it returns. Fails with [`StoreError::Full`] once the counter
    /// reached `u32::MAX` (about four billion starts).
    fn next_epoch(&mut self) -> Result<u32, StoreError> {
        self.settle()?;
        let floor = self.stored_epoch()?.max(self.summary.max_epoch);
        let next = floor.checked_add(1).ok_or(StoreError::Full)?;
        self.with_map(async |map, buf| map.store_item(buf, &EPOCH, &next).await)?;
        Ok(next)
    }

    fn load_spend(&mut self, link: u8) -> Result<Option<LinkSpend>, StoreError> {
        let key = SPEND | u16::from(link);
        let v = self.with_map(async |map, buf| map.fetch_item::<[u64; 2]>(buf, &key).await)?;
        Ok(v.map(|[spent, ms]| LinkSpend {
            spent,
            window_elapsed: Duration::from_millis(ms),
        }))
    }

    fn save_spend(&mut self, link: u8, spend: LinkSpend) -> Result<(), StoreError> {
        let key = SPEND | u16::from(link);
        let v = [spend.spent, spend.window_elapsed.as_millis()];
        self.with_map(async |map, buf| map.store_item(buf, &key, &v).await)
    }
}
