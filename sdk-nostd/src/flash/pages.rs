//! Which records share the oldest flash page: what must go before an append fits.
//!
//! `sequential-storage` gets room back only by erasing a page whose items were all popped,
//! and its queue API does not say where an item lies. So the store reads the item headers
//! of its pages itself, in the layout that crate writes (and documents in its source):
//! each page holds items from one word after its start to one word before its end; an
//! item is an 8-byte header (data CRC, `0` once popped; data length; CRC of the length),
//! padded to the flash word, then its data, padded to the word; an erased header ends
//! the page's items. Only the keys are read (a frame's first bytes); nothing is written.

use embedded_storage::nor_flash::MultiwriteNorFlash;

use super::{FlashStore, MAX_WORD};
use crate::frame;
use crate::store::{RecordKey, StoreError};

/// Bytes of an item header before padding.
const HEADER: usize = 8;
/// Bytes of a frame read to learn its key: version, length and the largest metadata.
const KEY_PREFIX: usize = 5 + frame::MAX_META;

#[repr(align(4))]
struct ReadBuf([u8; KEY_PREFIX + MAX_WORD]);

impl<F: MultiwriteNorFlash, const N: usize> FlashStore<F, N> {
    const fn pad(n: usize) -> usize {
        n.div_ceil(Self::WORD) * Self::WORD
    }

    /// The newest key of the live records on the page that holds `oldest`, if a page
    /// holds it.
    pub(super) fn newest_on_page_of(
        &mut self,
        oldest: RecordKey,
        newest: RecordKey,
    ) -> Result<Option<RecordKey>, StoreError> {
        let start = self.queue.flash_range().start as usize;
        for page in 0..self.pages {
            let base = start + page * F::ERASE_SIZE;
            let mut found = false;
            let mut last = None;
            self.page_keys(base, |key| {
                found |= key == oldest;
                // A torn item may read as any key: only keys the store holds count.
                if (oldest..=newest).contains(&key) {
                    last = last.max(Some(key));
                }
            })?;
            if found {
                return Ok(last);
            }
        }
        Ok(None)
    }

    /// Calls `each` with the key of every live item on the page at `base`.
    fn page_keys(
        &mut self,
        base: usize,
        mut each: impl FnMut(RecordKey),
    ) -> Result<(), StoreError> {
        let flash = &mut self.queue.flash().0;
        let end = base + F::ERASE_SIZE - Self::WORD;
        let mut addr = base + Self::WORD;
        let mut buf = ReadBuf([0; KEY_PREFIX + MAX_WORD]);
        while addr + Self::pad(HEADER) <= end {
            let head = &mut buf.0[..Self::pad(HEADER)];
            flash.read(addr as u32, head).map_err(|_| StoreError::Io)?;
            if head.iter().all(|&b| b == 0xff) {
                break;
            }
            let crc = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let len = usize::from(u16::from_le_bytes([head[4], head[5]]));
            let data = addr + Self::pad(HEADER);
            let next = data + Self::pad(len);
            if next > end {
                // Not a header this store's queue wrote whole: no further item is trusted.
                break;
            }
            if crc != 0 {
                let want = len.min(KEY_PREFIX).div_ceil(F::READ_SIZE) * F::READ_SIZE;
                let bytes = &mut buf.0[..want];
                flash.read(data as u32, bytes).map_err(|_| StoreError::Io)?;
                if let Some(meta) = frame::peek_meta(&bytes[..len.min(want)]) {
                    each(meta.key());
                }
            }
            addr = next;
        }
        Ok(())
    }
}
