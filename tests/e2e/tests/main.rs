//! End-to-end tests against the real netunlockd binary.
mod agent_contract;
mod cli;
mod daemon;
mod docs;
mod escrow;
mod escrow_appliances;
mod escrow_contract;
mod escrow_durability;
mod escrow_recovery;
mod escrow_roles;
mod escrow_support;
mod group;
mod group_rig;
mod group_v6;
mod harness;
mod nkpu;
mod nkpu_trust;
