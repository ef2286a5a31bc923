//! End-to-end tests against the real netunlockd binary.
