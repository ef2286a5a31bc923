//! One module per console section.

pub mod admin;
pub mod dashboard;
pub mod devices;
pub mod fleet;
pub mod home;
pub mod recovery;
pub mod reports;
pub mod signin;
pub mod tpm;
