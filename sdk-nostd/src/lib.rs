//! twinhub-core
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "sas")]
pub mod sas;
