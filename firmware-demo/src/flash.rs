//! The device's NOR flash, kept in a file of the host over semihosting.
//!
//! The board has no flash the firmware may write, so [`FileFlash`] plays one: a file of
//! [`SIZE`] bytes in QEMU's working directory (named [`PATH`]), read and written with the
//! semihosting calls `SYS_OPEN`, `SYS_SEEK`, `SYS_READ` and `SYS_WRITE`. It keeps NOR
//! rules, so the flash store above it meets what real flash would do: an erase sets a
//! whole page to `0xFF`, and a write can only clear bits (the file gets the AND of what
//! was there and what is written, read-modify-write). Every change is one host `write`
//! of at most [`CHUNK`] bytes, so a QEMU killed mid-operation leaves what a power cut
//! would: some chunks done, the rest untouched.

use cortex_m_semihosting::{nr, syscall};
use embedded_storage::nor_flash::{
    self, ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// The flash file, relative to QEMU's working directory (NUL-terminated for the host).
pub const PATH: &str = "twinhub-flash.bin\0";
/// Bytes of one erase page.
pub const PAGE: usize = 4096;
/// Pages of the flash.
pub const PAGES: usize = 18;
/// Bytes of the flash.
pub const SIZE: usize = PAGE * PAGES;
/// The largest piece moved in one host call: bounds the stack buffer of a write.
const CHUNK: usize = 256;

/// Why a flash operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// An offset or length is not a multiple of the word (or, for an erase, of the page).
    NotAligned,
    /// The range runs past the end of the flash.
    OutOfBounds,
    /// The host refused to open the file.
    Open,
    /// The host failed a seek, read or write of the file.
    Host,
}

impl core::fmt::Display for FlashError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FlashError::NotAligned => "flash access not aligned",
            FlashError::OutOfBounds => "flash access out of bounds",
            FlashError::Open => "the host could not open the flash file",
            FlashError::Host => "the host failed a flash file operation",
        })
    }
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FlashError::Open | FlashError::Host => NorFlashErrorKind::Other,
        }
    }
}

impl From<NorFlashErrorKind> for FlashError {
    fn from(kind: NorFlashErrorKind) -> Self {
        match kind {
            NorFlashErrorKind::NotAligned => FlashError::NotAligned,
            NorFlashErrorKind::OutOfBounds => FlashError::OutOfBounds,
            _ => FlashError::Host,
        }
    }
}

/// A NOR flash of [`SIZE`] bytes in the host file [`PATH`].
#[derive(Debug)]
pub struct FileFlash {
    fd: usize,
}

impl FileFlash {
    /// Opens the flash file, creating it if missing and extending it with erased bytes
    /// (`0xFF`) if short: fresh flash reads as erased, and a file cut short while it was
    /// being extended is finished on the next boot.
    pub fn open() -> Result<Self, FlashError> {
        // `r+b` keeps what the file holds; `w+b` is only for a file that is not there yet
        // (it would truncate one that is).
        let fd = match host_open(nr::open::RW_BINARY) {
            Some(fd) => fd,
            None => host_open(nr::open::RW_TRUNC_BINARY).ok_or(FlashError::Open)?,
        };
        let flash = FileFlash { fd };
        // SAFETY: SYS_FLEN takes the handle the host gave us and only returns a number.
        let len = unsafe { syscall!(FLEN, fd) } as isize;
        if len < 0 {
            return Err(FlashError::Host);
        }
        let erased = [0xFF; CHUNK];
        let mut at = len as usize;
        while at < SIZE {
            let n = CHUNK.min(SIZE - at);
            flash.put(at, &erased[..n])?;
            at += n;
        }
        Ok(flash)
    }

    fn seek(&self, at: usize) -> Result<(), FlashError> {
        // SAFETY: SYS_SEEK takes the handle and an offset; no memory is passed.
        match unsafe { syscall!(SEEK, self.fd, at) } {
            0 => Ok(()),
            _ => Err(FlashError::Host),
        }
    }

    /// Reads exactly `out.len()` bytes at `at`.
    fn get(&self, at: usize, out: &mut [u8]) -> Result<(), FlashError> {
        self.seek(at)?;
        // SAFETY: the host writes at most `out.len()` bytes into `out`, which we own
        // mutably for the call. SYS_READ returns how many bytes it did NOT read.
        let missed = unsafe { syscall!(READ, self.fd, out.as_mut_ptr(), out.len()) };
        if missed == 0 {
            Ok(())
        } else {
            Err(FlashError::Host)
        }
    }

    /// Writes all of `bytes` at `at`, as they are (callers keep the NOR rules).
    fn put(&self, at: usize, bytes: &[u8]) -> Result<(), FlashError> {
        self.seek(at)?;
        // SAFETY: the host only reads `bytes.len()` bytes from `bytes`. SYS_WRITE returns
        // how many bytes it did NOT write.
        let missed = unsafe { syscall!(WRITE, self.fd, bytes.as_ptr(), bytes.len()) };
        if missed == 0 {
            Ok(())
        } else {
            Err(FlashError::Host)
        }
    }
}

/// Opens [`PATH`] in `mode`; `None` if the host refuses.
fn host_open(mode: usize) -> Option<usize> {
    // SAFETY: the host reads the name's `len` bytes (NUL excluded, as SYS_OPEN wants) from
    // a static string.
    let fd = unsafe { syscall!(OPEN, PATH.as_ptr(), mode, PATH.len() - 1) } as isize;
    (fd >= 0).then_some(fd as usize)
}

impl ErrorType for FileFlash {
    type Error = FlashError;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 4;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        nor_flash::check_read(self, offset, bytes.len())?;
        let mut at = offset as usize;
        for piece in bytes.chunks_mut(CHUNK) {
            self.get(at, piece)?;
            at += piece.len();
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        nor_flash::check_erase(self, from, to)?;
        let erased = [0xFF; CHUNK];
        for at in (from as usize..to as usize).step_by(CHUNK) {
            self.put(at, &erased)?;
        }
        Ok(())
    }

    /// Clears bits only: each byte becomes what was there AND what is written, as on NOR
    /// flash (which is also what lets a written word be written again: multiwrite).
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        nor_flash::check_write(self, offset, bytes.len())?;
        let mut cell = [0u8; CHUNK];
        let mut at = offset as usize;
        for piece in bytes.chunks(CHUNK) {
            let cell = &mut cell[..piece.len()];
            self.get(at, cell)?;
            for (c, b) in cell.iter_mut().zip(piece) {
                *c &= b;
            }
            self.put(at, cell)?;
            at += piece.len();
        }
        Ok(())
    }
}

/// A word written twice keeps the AND of both writes, as NOR flash does.
impl MultiwriteNorFlash for FileFlash {}
