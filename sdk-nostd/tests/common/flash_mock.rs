//! A blocking view of `sequential-storage`'s in-memory mock flash, for the flash store's
//! tests and bench: counts page erases, and once power is cut (the mock's byte countdown ran
//! out) fails every operation until `reboot`, as a device without power would. Handles
//! share one flash (as a device's code and its test harness would), so the flash outlives a
//! store that failed to open.

use std::cell::RefCell;
use std::rc::Rc;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashErrorKind, ReadNorFlash,
};
use embedded_storage_async::nor_flash as nb;
use sequential_storage::mock_flash::{MockFlashBase, MockFlashError, WriteCountCheck};

/// A handle to a mock flash of `PAGES` pages of `WORDS` 4-byte words.
pub struct Flash<const PAGES: usize, const WORDS: usize>(Rc<RefCell<Chip<PAGES, WORDS>>>);

/// The flash itself.
pub struct Chip<const PAGES: usize, const WORDS: usize> {
    pub mock: MockFlashBase<PAGES, 4, WORDS>,
    /// Pages erased so far.
    pub page_erases: u64,
    /// Power was cut: every operation fails until `reboot`.
    pub dead: bool,
}

impl<const PAGES: usize, const WORDS: usize> Flash<PAGES, WORDS> {
    pub const PAGE: u32 = (WORDS * 4) as u32;

    /// Erased flash; power is cut after `cut` bytes written or erased, if given.
    pub fn new(cut: Option<u32>) -> Self {
        Flash(Rc::new(RefCell::new(Chip {
            // Removing a record zeroes a word written before: NOR flash allows that.
            mock: MockFlashBase::new(WriteCountCheck::Twice, cut, true),
            page_erases: 0,
            dead: false,
        })))
    }

    /// Another handle to the same flash.
    pub fn handle(&self) -> Self {
        Flash(Rc::clone(&self.0))
    }

    /// A new flash holding a copy of these bytes, powered, with power cut after `cut`.
    pub fn copy(&self, cut: Option<u32>) -> Self {
        let f = Flash::new(cut);
        f.0.borrow_mut().mock = self.0.borrow().mock.clone();
        f.0.borrow_mut().mock.bytes_until_shutoff = cut;
        f
    }

    /// Power comes back; cut again after `cut` bytes, if given.
    pub fn reboot(&self, cut: Option<u32>) {
        let mut c = self.0.borrow_mut();
        c.dead = false;
        c.mock.bytes_until_shutoff = cut;
    }

    /// Whether power was cut.
    pub fn dead(&self) -> bool {
        self.0.borrow().dead
    }

    /// Pages erased so far.
    pub fn page_erases(&self) -> u64 {
        self.0.borrow().page_erases
    }

    /// Bytes written or erased so far, when power is set to go after `u32::MAX` bytes.
    pub fn bytes_touched(&self) -> u32 {
        u32::MAX - self.0.borrow().mock.bytes_until_shutoff.unwrap_or(0)
    }

    fn run<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut MockFlashBase<PAGES, 4, WORDS>) -> Result<T, MockFlashError>,
    ) -> Result<T, NorFlashErrorKind> {
        let mut c = self.0.borrow_mut();
        if c.dead {
            return Err(NorFlashErrorKind::Other);
        }
        match embassy_futures::block_on(f(&mut c.mock)) {
            Ok(v) => Ok(v),
            Err(MockFlashError::EarlyShutoff(..)) => {
                c.dead = true;
                Err(NorFlashErrorKind::Other)
            }
            Err(e) => panic!("mock flash misused: {e:?}"),
        }
    }
}

impl<const PAGES: usize, const WORDS: usize> ErrorType for Flash<PAGES, WORDS> {
    type Error = NorFlashErrorKind;
}

impl<const PAGES: usize, const WORDS: usize> ReadNorFlash for Flash<PAGES, WORDS> {
    const READ_SIZE: usize = 4;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.run(async |m| nb::ReadNorFlash::read(m, offset, bytes).await)
    }

    fn capacity(&self) -> usize {
        PAGES * WORDS * 4
    }
}

impl<const PAGES: usize, const WORDS: usize> NorFlash for Flash<PAGES, WORDS> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = WORDS * 4;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.run(async |m| nb::NorFlash::erase(m, from, to).await)?;
        self.0.borrow_mut().page_erases += u64::from((to - from) / Self::PAGE);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.run(async |m| nb::NorFlash::write(m, offset, bytes).await)
    }
}

impl<const PAGES: usize, const WORDS: usize> MultiwriteNorFlash for Flash<PAGES, WORDS> {}
