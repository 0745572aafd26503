//! A blocking `embedded-storage` flash seen through the async traits `sequential-storage`
//! is written against, and the executor that drives its futures.
//!
//! Every method completes before it returns, so each future is ready on its first poll and
//! the busy-polling `block_on` never spins.

use embedded_storage::nor_flash as blocking;
use embedded_storage_async::nor_flash as nb;

pub(crate) use embassy_futures::block_on;

/// A blocking NOR flash behind the async NOR-flash traits.
#[derive(Debug)]
pub(crate) struct Blocking<F>(pub(crate) F);

impl<F: blocking::ErrorType> nb::ErrorType for Blocking<F> {
    type Error = F::Error;
}

impl<F: blocking::ReadNorFlash> nb::ReadNorFlash for Blocking<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: blocking::NorFlash> nb::NorFlash for Blocking<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

impl<F: blocking::MultiwriteNorFlash> nb::MultiwriteNorFlash for Blocking<F> {}
