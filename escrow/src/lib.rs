//! escrow
