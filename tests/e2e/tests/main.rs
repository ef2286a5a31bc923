//! End-to-end tests against the real netunlockd binary.
mod daemon;
mod harness;
mod nkpu;
