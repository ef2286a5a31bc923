//! Integration tests of the certs crate: one test binary, one module per concern.
// Helpers outside #[test] fns are not covered by clippy.toml allow-*-in-tests; this whole crate is test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod files;
mod garbage;
mod generate;
mod identity;
mod inspect;
mod pfx;
mod tls;
mod vector;
