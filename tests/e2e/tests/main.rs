//! End-to-end tests against the real netunlockd binary.
mod agent_contract;
mod console;
mod daemon;
mod escrow;
mod escrow_durability;
mod escrow_roles;
mod escrow_support;
mod harness;
mod nkpu;
mod nkpu_trust;
