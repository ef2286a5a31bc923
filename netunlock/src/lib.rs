//! netunlock
