//! Directory sign-in: help-desk staff authenticate with their Active Directory or OpenLDAP account
//! and get their role from group membership, re-checked at every sign-in.
//!
//! Pure parts ([`config`], [`escape`], [`roles`], [`refusal`]) are table-tested; [`client`] does the
//! LDAP I/O. The service layer (`EscrowService::sign_in_directory`) turns a [`DirectoryUser`] into an
//! operator and audits every outcome. Nothing here touches the database.

pub mod client;
pub mod config;
pub mod escape;
pub mod refusal;
pub mod roles;

pub use client::{Directory, DirectoryError, DirectoryUser};
pub use config::{BindMethod, DirectoryConfig, GroupLookup};
pub use refusal::Refusal;
pub use roles::RoleMapping;
