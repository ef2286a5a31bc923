//! escrow::directory: the validation is escrow's own code; the client is a stand-in.

#[path = "../../../escrow/src/directory/config.rs"]
pub mod config;
#[path = "../../../escrow/src/directory/roles.rs"]
pub mod roles;

pub use config::{BindMethod, DirectoryConfig, GroupLookup};

/// Stand-in for the LDAP client: the config module builds one only in `load`, outside the fuzzed
/// path.
pub struct Directory;

impl Directory {
    pub fn new(config: DirectoryConfig) -> Result<Self, String> {
        config.validate().map(|()| Self)
    }
}
