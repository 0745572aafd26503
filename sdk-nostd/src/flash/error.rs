//! Why a flash store does not open, and how `sequential-storage`'s errors map to
//! [`StoreError`].

use core::fmt;

use crate::store::StoreError;

/// Why [`FlashStore::open`](super::FlashStore::open) refused: each names one problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// The records range does not start or end on a flash page (erase block) boundary.
    RecordsNotPageAligned,
    /// The records range holds fewer than two pages.
    RecordsTooSmall,
    /// The state range does not start or end on a flash page (erase block) boundary.
    StateNotPageAligned,
    /// The state range holds fewer than two pages.
    StateTooSmall,
    /// The records and state ranges overlap.
    RangesOverlap,
    /// A range runs past the end of the flash.
    OutOfBounds,
    /// The flash's pages or the store's buffer `N` are too small to hold even the smallest
    /// frame; `max_frame` is the largest frame they allow.
    TooSmallForFrames {
        /// The largest frame the geometry and buffer allow.
        max_frame: usize,
    },
    /// The flash's word (read or write unit) is larger than the 32 bytes supported.
    WordTooLarge,
    /// A record in flash is longer than the store's buffer allows: it was written by a build
    /// with a larger `N`. Open it with a buffer of at least `needed` bytes.
    FrameTooLarge {
        /// Bytes the buffer needs.
        needed: usize,
    },
    /// The medium failed, or its contents are damaged beyond what the repair can fix.
    Io,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::RecordsNotPageAligned => {
                f.write_str("records range not on flash page boundaries")
            }
            OpenError::RecordsTooSmall => f.write_str("records range holds fewer than 2 pages"),
            OpenError::StateNotPageAligned => {
                f.write_str("state range not on flash page boundaries")
            }
            OpenError::StateTooSmall => f.write_str("state range holds fewer than 2 pages"),
            OpenError::RangesOverlap => f.write_str("records and state ranges overlap"),
            OpenError::OutOfBounds => f.write_str("range runs past the end of the flash"),
            OpenError::TooSmallForFrames { max_frame } => write!(
                f,
                "flash pages or buffer too small for a frame (largest frame {max_frame} bytes)"
            ),
            OpenError::WordTooLarge => f.write_str("flash word larger than 32 bytes"),
            OpenError::FrameTooLarge { needed } => {
                write!(f, "stored frame needs a {needed}-byte buffer")
            }
            OpenError::Io => f.write_str("flash failed or damaged beyond repair"),
        }
    }
}

impl core::error::Error for OpenError {}

/// Maps an error of `sequential-storage` (after its own automatic repair) to a store error.
pub(crate) fn store_err<E>(e: sequential_storage::Error<E>) -> StoreError {
    use crate::frame::FrameError;
    use sequential_storage::Error as E;
    match e {
        E::FullStorage | E::ItemTooBig => StoreError::Full,
        E::BufferTooSmall(_) => StoreError::Corrupt(FrameError::BufferTooSmall),
        // Storage failures, corruption its repair could not fix, and anything else.
        _ => StoreError::Io,
    }
}
