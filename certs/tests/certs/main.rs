//! Integration tests of the certs crate: one test binary, one module per concern.

mod common;
mod files;
mod garbage;
mod generate;
mod identity;
mod inspect;
mod pfx;
mod tls;
mod vector;
