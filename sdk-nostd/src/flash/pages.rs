//! Reading the queue's pages directly: which records share the oldest page (what must go
//! before an append fits), and a cursor that reads the records in order without walking
//! from the oldest one each time.
//!
//! `sequential-storage` gets room back only by erasing a page whose items were all popped,
//! and its queue API neither says where an item lies nor starts a walk anywhere but at the
//! oldest item. So the store reads the item headers of its pages itself, in the layout that
//! crate writes (and documents in its source): each page holds items from one word after
//! its start to one word before its end; an item is an 8-byte header (data CRC, `0` once
//! popped; data length; CRC of the length), padded to the flash word, then its data,
//! padded to the word; an erased header ends the page's items. An item counts only when
//! its data matches its CRC, as the queue's own walk decides (a write or a pop cut by
//! power loss leaves one that does not). Nothing is written here, and anything unexpected
//! sends the caller back to the queue's own walk.

use crc::{Crc, NoTable};
use embedded_storage::nor_flash::MultiwriteNorFlash;

use super::{FlashStore, MAX_WORD};
use crate::frame;
use crate::store::{RecordInfo, RecordKey, StoreError};

/// Bytes of an item header before padding.
const HEADER: usize = 8;

#[repr(align(4))]
struct ReadBuf([u8; HEADER + MAX_WORD]);

/// The queue's item checksum: CRC-32C with its register started at `0xEEEE_EEEE` (the
/// `crc` crate takes a reflected algorithm's initial value bit-reversed). Bit by bit, with
/// no table: it runs once per item read, beside the flash read itself, and firmware flash
/// is tight.
const ITEM_CRC: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&crc::Algorithm {
    width: 32,
    poly: 0x1edc_6f41,
    init: 0x7777_7777,
    refin: true,
    refout: true,
    xorout: 0xffff_ffff,
    check: 0,
    residue: 0,
});

/// The checksum the queue stores for `data`: never 0 (a popped item), and never with a
/// first byte of `0x00` or `0xff`.
fn item_crc(data: &[u8]) -> u32 {
    match ITEM_CRC.checksum(data) {
        0 => 1,
        v if v as u8 == 0 || v as u8 == 0xff => v ^ 1,
        v => v,
    }
}

/// The checksum of an item header's length field: CRC-16 with polynomial `0x1a2e`
/// (reflected), initial value and final XOR `0xffff`, and `0xffff` itself never used.
fn length_crc(len: [u8; 2]) -> u16 {
    let mut crc = 0xffff_u16;
    for byte in len {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x1a2e
            } else {
                crc >> 1
            };
        }
    }
    match crc ^ 0xffff {
        0xffff => 0xfffe,
        c => c,
    }
}

/// A live item of the queue: where it is, and the record it holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Item {
    /// Address of its header.
    addr: u32,
    /// Bytes of data (the frame).
    len: u16,
    pub(super) info: RecordInfo,
}

/// What is at one item address.
enum Slot {
    /// No item here (erased, or no room for one): the page's items ended.
    End,
    /// A popped item, or one whose frame does not read as a record: skipped.
    Skip {
        next: usize,
    },
    Live {
        item: Item,
        next: usize,
    },
}

impl<F: MultiwriteNorFlash, const N: usize> FlashStore<F, N> {
    const fn pad(n: usize) -> usize {
        n.div_ceil(Self::WORD) * Self::WORD
    }

    fn page_base(&self, page: usize) -> usize {
        self.queue.flash_range().start as usize + page * F::ERASE_SIZE
    }

    /// Whether the page at `base` is marked as in use, as the queue reads its start marker
    /// (at least half a byte of zero bits). An unmarked page holds no items, whatever an
    /// erase cut by power loss left in it.
    fn page_in_use(&mut self, base: usize) -> Result<bool, StoreError> {
        self.marked(base)
    }

    /// Whether the marker word at `addr` is written (at least half a byte of zero bits).
    fn marked(&mut self, addr: usize) -> Result<bool, StoreError> {
        let mut marker = ReadBuf([0; HEADER + MAX_WORD]);
        let word = &mut marker.0[..F::READ_SIZE];
        self.queue
            .flash()
            .0
            .read(addr as u32, word)
            .map_err(|_| StoreError::Io)?;
        Ok(word.iter().map(|b| b.count_zeros()).sum::<u32>() >= 4)
    }

    /// The queue's oldest page, found as the queue finds it: the first closed page (both
    /// markers written) after the one being written (start marker only), else that one.
    /// `None` when no page is being written (the caller walks the queue instead).
    fn oldest_page(&mut self) -> Result<Option<usize>, StoreError> {
        let mut youngest = None;
        for page in 0..self.pages {
            let (start, end) = self.markers(page)?;
            if start && !end {
                youngest = Some(page);
            }
        }
        let Some(y) = youngest else {
            return Ok(None);
        };
        for i in 1..self.pages {
            let page = (y + i) % self.pages;
            if self.markers(page)? == (true, true) {
                return Ok(Some(page));
            }
        }
        Ok(Some(y))
    }

    /// Whether page `page`'s start and end markers are written.
    fn markers(&mut self, page: usize) -> Result<(bool, bool), StoreError> {
        let base = self.page_base(page);
        Ok((
            self.marked(base)?,
            self.marked(base + F::ERASE_SIZE - F::READ_SIZE)?,
        ))
    }

    /// Reads the item at `addr` of the page at `base`.
    fn slot(&mut self, base: usize, addr: usize) -> Result<Slot, StoreError> {
        let end = base + F::ERASE_SIZE - Self::WORD;
        if addr + Self::pad(HEADER) > end
            || (addr == base + Self::WORD && !self.page_in_use(base)?)
        {
            return Ok(Slot::End);
        }
        let Self { queue, buf, .. } = self;
        let flash = &mut queue.flash().0;
        let mut hbuf = ReadBuf([0; HEADER + MAX_WORD]);
        let head = &mut hbuf.0[..Self::pad(HEADER)];
        flash.read(addr as u32, head).map_err(|_| StoreError::Io)?;
        if head.iter().all(|&b| b == 0xff) {
            return Ok(Slot::End);
        }
        let crc = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = usize::from(u16::from_le_bytes([head[4], head[5]]));
        let data = addr + Self::pad(HEADER);
        let next = data + Self::pad(len);
        if length_crc([head[4], head[5]]) != u16::from_le_bytes([head[6], head[7]]) || next > end {
            // A header a power cut left unfinished: the queue steps over it a word at a
            // time, and so does this walk.
            return Ok(Slot::Skip {
                next: addr + Self::WORD,
            });
        }
        if crc == 0 {
            return Ok(Slot::Skip { next });
        }
        // The data is read whole to check it (the store's buffer holds the largest item;
        // a longer one is not this store's).
        let Some(bytes) = buf.0.get_mut(..len.div_ceil(F::READ_SIZE) * F::READ_SIZE) else {
            return Ok(Slot::Skip { next });
        };
        flash.read(data as u32, bytes).map_err(|_| StoreError::Io)?;
        let bytes = &bytes[..len];
        if item_crc(bytes) != crc {
            return Ok(Slot::Skip { next });
        }
        let Some((meta, body, meta_len)) = frame::peek_meta(bytes) else {
            return Ok(Slot::Skip { next });
        };
        let frame_len = frame::HEADER_AND_CRC + body;
        if frame_len != len || meta_len > body {
            return Ok(Slot::Skip { next });
        }
        let info = RecordInfo {
            meta,
            payload_len: (body - meta_len) as u32,
            frame_len: frame_len as u32,
        };
        let item = Item {
            addr: addr as u32,
            len: len as u16,
            info,
        };
        Ok(Slot::Live { item, next })
    }

    /// Calls `each` with the live items on page `page`, in order, while it returns true.
    fn page_items(
        &mut self,
        page: usize,
        mut each: impl FnMut(&Item) -> bool,
    ) -> Result<(), StoreError> {
        let base = self.page_base(page);
        let mut addr = base + Self::WORD;
        loop {
            match self.slot(base, addr)? {
                Slot::End => return Ok(()),
                Slot::Skip { next } => addr = next,
                Slot::Live { item, next } => {
                    if !each(&item) {
                        return Ok(());
                    }
                    addr = next;
                }
            }
        }
    }

    /// The page that holds record `key`, and its item: walked to in queue order from the
    /// queue's oldest page (which is remembered for the walks after it).
    fn find_item(&mut self, key: RecordKey) -> Result<Option<(usize, Item)>, StoreError> {
        let Some(oldest) = self.oldest_page()? else {
            return Ok(None);
        };
        self.page_hint = oldest;
        // The queue erases a page only when it writes to it again: until then a page whose
        // records all went stays closed, the oldest by its markers, and the oldest record
        // is on a later page.
        let mut page = oldest;
        let mut first = None;
        for _ in 0..self.pages {
            self.page_items(page, |it| {
                first = Some(*it);
                false
            })?;
            if first.is_some() {
                break;
            }
            page = (page + 1) % self.pages;
        }
        let Some(mut at) = first.map(|it| (page, it)) else {
            return Ok(None);
        };
        while at.1.info.key() < key {
            match self.item_after(at.0, at.1)? {
                Some(next) => at = next,
                None => return Ok(None),
            }
        }
        Ok((at.1.info.key() == key).then_some(at))
    }

    /// The newest key of the live records on the page that holds `oldest`, if a page
    /// holds it.
    pub(super) fn newest_on_page_of(
        &mut self,
        oldest: RecordKey,
        newest: RecordKey,
    ) -> Result<Option<RecordKey>, StoreError> {
        let Some((page, _)) = self.find_item(oldest)? else {
            return Ok(None);
        };
        let mut last = None;
        self.page_items(page, |it| {
            // A torn item may read as any key: only keys the store holds count.
            let key = it.info.key();
            if (oldest..=newest).contains(&key) {
                last = last.max(Some(key));
            }
            true
        })?;
        Ok(last)
    }

    /// The item after `from` (on page `page`) in queue order, with its page: on the same
    /// page, or the first of a following page in use, up to the queue's oldest page
    /// (`page_hint`, set by [`find_item`](Self::find_item)). `None` past the newest record.
    fn item_after(&mut self, page: usize, from: Item) -> Result<Option<(usize, Item)>, StoreError> {
        let newest = self.summary.newest;
        let mut page = page;
        let mut addr = from.addr as usize + Self::pad(HEADER) + Self::pad(usize::from(from.len));
        // Each page at most once: past the newest record, the walk meets older keys.
        for _ in 0..=self.pages {
            let base = self.page_base(page);
            loop {
                match self.slot(base, addr)? {
                    Slot::End => break,
                    Slot::Skip { next } => addr = next,
                    Slot::Live { item, .. } => {
                        let key = item.info.key();
                        let ok = key > from.info.key() && newest.is_some_and(|n| key <= n);
                        return Ok(ok.then_some((page, item)));
                    }
                }
            }
            page = (page + 1) % self.pages;
            if page == self.page_hint {
                return Ok(None);
            }
            addr = self.page_base(page) + Self::WORD;
        }
        Ok(None)
    }

    /// The item of record `key`, found from the cursor when it is at or before `key`, else
    /// from the page that holds it; moves the cursor there. `None` when the pages do not
    /// tell (the caller then walks the queue).
    pub(super) fn locate(&mut self, key: RecordKey) -> Result<Option<Item>, StoreError> {
        let mut at = match self.cursor {
            Some((page, it)) if it.info.key() <= key => (page, it),
            _ => match self.find_item(key)? {
                Some(found) => found,
                None => return Ok(None),
            },
        };
        while at.1.info.key() < key {
            match self.item_after(at.0, at.1)? {
                Some(next) => at = next,
                None => return Ok(None),
            }
        }
        if at.1.info.key() != key {
            return Ok(None);
        }
        self.cursor = Some(at);
        Ok(Some(at.1))
    }

    /// The record after `after`, when the cursor is on it; moves the cursor on.
    pub(super) fn cursor_next(
        &mut self,
        after: RecordKey,
    ) -> Result<Option<RecordInfo>, StoreError> {
        let Some((page, it)) = self.cursor.filter(|(_, it)| it.info.key() == after) else {
            return Ok(None);
        };
        let next = self.item_after(page, it)?;
        self.cursor = next;
        Ok(next.map(|(_, it)| it.info))
    }

    /// Copies item `it`'s frame into `out` after checking it; `None` when it does not
    /// check (the caller then reads through the queue).
    pub(super) fn read_item(
        &mut self,
        it: &Item,
        out: &mut [u8],
    ) -> Result<Option<usize>, StoreError> {
        let len = usize::from(it.len);
        let data = it.addr as usize + Self::pad(HEADER);
        let padded = len.div_ceil(F::READ_SIZE) * F::READ_SIZE;
        let Self { queue, buf, .. } = self;
        let Some(scratch) = buf.0.get_mut(..padded) else {
            return Ok(None);
        };
        queue
            .flash()
            .0
            .read(data as u32, scratch)
            .map_err(|_| StoreError::Io)?;
        match frame::decode(&scratch[..len]) {
            Ok((_, n)) if n == len => {}
            _ => return Ok(None),
        }
        let dst = out
            .get_mut(..len)
            .ok_or(StoreError::Corrupt(frame::FrameError::BufferTooSmall))?;
        dst.copy_from_slice(&scratch[..len]);
        Ok(Some(len))
    }
}
