//! `[directory]`: directory sign-in for the help-desk console (issue 10). The wire form, its
//! validation (pure), and `load`, which reads the service account's password and the CA file and
//! builds the escrow crate's [`escrow::directory::Directory`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use escrow::Role;
use escrow::directory::{BindMethod, Directory, DirectoryConfig, GroupLookup};
use serde::Deserialize;
use zeroize::Zeroizing;

/// systemd credential holding the service account's password when `bind_password_file` is unset.
pub(crate) const BIND_PASSWORD_CREDENTIAL: &str = "directory-bind-password";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireDirectory {
    /// `ldaps://dc1.corp.example` or `ldap://…` with `starttls = true`.
    pub(crate) url: String,
    #[serde(default)]
    pub(crate) starttls: bool,
    /// PEM CA certificate(s) the directory's certificate chains to; default: the system bundle.
    pub(crate) ca_file: Option<PathBuf>,
    /// Bind directly as this name with `{user}` replaced (UPN or DN). Exclusive with `bind_dn`.
    pub(crate) bind_template: Option<String>,
    /// Service account to search people with (search-then-bind).
    pub(crate) bind_dn: Option<String>,
    /// File holding the service account's password (default: the systemd credential
    /// `directory-bind-password`).
    pub(crate) bind_password_file: Option<PathBuf>,
    pub(crate) user_base: String,
    #[serde(default = "default_user_filter")]
    pub(crate) user_filter: String,
    /// "member_of" (the person's memberOf attribute) or "search" (group_base + group_filter).
    #[serde(default = "default_group_lookup")]
    pub(crate) group_lookup: String,
    pub(crate) group_base: Option<String>,
    #[serde(default = "default_group_filter")]
    pub(crate) group_filter: String,
    #[serde(default)]
    pub(crate) admin_groups: Vec<String>,
    #[serde(default)]
    pub(crate) helpdesk_groups: Vec<String>,
    #[serde(default)]
    pub(crate) auditor_groups: Vec<String>,
    #[serde(default = "default_connect_timeout_secs")]
    pub(crate) connect_timeout_secs: u64,
    #[serde(default = "default_operation_timeout_secs")]
    pub(crate) operation_timeout_secs: u64,
}

fn default_user_filter() -> String {
    "(&(objectClass=user)(sAMAccountName={user}))".into()
}
fn default_group_lookup() -> String {
    "member_of".into()
}
fn default_group_filter() -> String {
    "(&(objectClass=groupOfNames)(member={dn}))".into()
}
fn default_connect_timeout_secs() -> u64 {
    5
}
fn default_operation_timeout_secs() -> u64 {
    10
}

/// How the service account's password is found (read at `load`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PasswordSource {
    File(PathBuf),
    Credential,
}

/// The validated `[directory]` section (no secret in it: the password is read by [`load`]).
#[derive(Debug, Clone)]
pub(crate) struct DirectorySettings {
    pub(crate) url: String,
    pub(crate) starttls: bool,
    pub(crate) ca_file: Option<PathBuf>,
    /// Some: bind template; None: search-then-bind as `bind_dn`.
    pub(crate) bind_template: Option<String>,
    pub(crate) bind_dn: Option<(String, PasswordSource)>,
    pub(crate) user_base: String,
    pub(crate) user_filter: String,
    pub(crate) groups: GroupLookup,
    pub(crate) role_groups: Vec<(String, Role)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
}

/// Validate `[directory]` (pure). The escrow crate's own validation runs on a placeholder password
/// so `config check` reports URL, filter and group mistakes without reading any file.
pub(crate) fn validate(w: &WireDirectory) -> Result<DirectorySettings> {
    let bind_dn = match (&w.bind_template, &w.bind_dn) {
        (Some(_), Some(_)) => bail!(
            "directory: set either bind_template (bind as the person) or bind_dn (search with a service account), not both"
        ),
        (None, None) => bail!(
            "directory: set bind_dn (+ bind_password_file) to search people with a service account, or bind_template such as \"{{user}}@corp.example\""
        ),
        (Some(_), None) => {
            if w.bind_password_file.is_some() {
                bail!(
                    "directory: bind_password_file belongs to bind_dn; bind_template binds as the person"
                );
            }
            None
        }
        (None, Some(dn)) => Some((
            dn.clone(),
            match &w.bind_password_file {
                Some(p) => PasswordSource::File(p.clone()),
                None => PasswordSource::Credential,
            },
        )),
    };
    let groups = match w.group_lookup.as_str() {
        "member_of" => GroupLookup::MemberOf,
        "search" => GroupLookup::Search {
            base: w.group_base.clone().context(
                "directory: group_lookup = \"search\" needs group_base (where the role groups live)",
            )?,
            filter: w.group_filter.clone(),
        },
        other => bail!("directory.group_lookup must be \"member_of\" or \"search\", not {other:?}"),
    };
    let role_groups: Vec<(String, Role)> = [
        (&w.admin_groups, Role::Admin),
        (&w.helpdesk_groups, Role::Helpdesk),
        (&w.auditor_groups, Role::Auditor),
    ]
    .into_iter()
    .flat_map(|(dns, role)| dns.iter().map(move |dn| (dn.clone(), role)))
    .collect();
    let settings = DirectorySettings {
        url: w.url.trim().to_owned(),
        starttls: w.starttls,
        ca_file: w.ca_file.clone(),
        bind_template: w.bind_template.clone(),
        bind_dn,
        user_base: w.user_base.clone(),
        user_filter: w.user_filter.clone(),
        groups,
        role_groups,
        connect_timeout: Duration::from_secs(w.connect_timeout_secs),
        operation_timeout: Duration::from_secs(w.operation_timeout_secs),
    };
    settings
        .escrow_config(Zeroizing::new("placeholder".into()), Vec::new())
        .validate()
        .map_err(|e| anyhow::anyhow!("directory: {e}"))?;
    Ok(settings)
}

impl DirectorySettings {
    fn escrow_config(&self, password: Zeroizing<String>, ca_pem: Vec<u8>) -> DirectoryConfig {
        DirectoryConfig {
            url: self.url.clone(),
            starttls: self.starttls,
            ca_pem,
            bind: match (&self.bind_template, &self.bind_dn) {
                (Some(t), _) => BindMethod::Template(t.clone()),
                (None, Some((dn, _))) => BindMethod::SearchThenBind {
                    dn: dn.clone(),
                    password,
                },
                // validate() guarantees one of them; an empty template fails validation loudly.
                (None, None) => BindMethod::Template(String::new()),
            },
            user_base: self.user_base.clone(),
            user_filter: self.user_filter.clone(),
            groups: self.groups.clone(),
            role_groups: self.role_groups.clone(),
            connect_timeout: self.connect_timeout,
            operation_timeout: self.operation_timeout,
        }
    }

    /// Read the service account's password and the CA file, and build the directory client.
    pub(crate) fn load(&self) -> Result<Directory> {
        let password = match &self.bind_dn {
            Some((_, source)) => read_password(source)?,
            None => Zeroizing::new(String::new()),
        };
        let ca_pem = match &self.ca_file {
            Some(p) => std::fs::read(p)
                .with_context(|| format!("cannot read directory.ca_file {}", p.display()))?,
            None => Vec::new(),
        };
        Directory::new(self.escrow_config(password, ca_pem))
            .map_err(|e| anyhow::anyhow!("directory: {e}"))
    }

    /// One line for `config check` and the start-up summary.
    pub(crate) fn describe(&self) -> String {
        let how = match (&self.bind_template, &self.bind_dn) {
            (Some(t), _) => format!("bind as {t}"),
            (None, Some((dn, _))) => format!("search as {dn}, then bind"),
            (None, None) => String::new(),
        };
        format!(
            "directory sign-in: {}{} ({how}; {} role group(s); CA: {})",
            self.url,
            if self.starttls { " with StartTLS" } else { "" },
            self.role_groups.len(),
            self.ca_file
                .as_ref()
                .map_or_else(|| "system bundle".to_owned(), |p| p.display().to_string()),
        )
    }
}

fn read_password(source: &PasswordSource) -> Result<Zeroizing<String>> {
    let path = match source {
        PasswordSource::File(p) => p.clone(),
        PasswordSource::Credential => std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|d| Path::new(&d).join(BIND_PASSWORD_CREDENTIAL))
            .filter(|p| p.exists())
            .context(
                "directory.bind_dn is set but neither directory.bind_password_file nor the systemd credential directory-bind-password is",
            )?,
    };
    if matches!(source, PasswordSource::File(_)) {
        crate::security::check_private_file(&path, "directory.bind_password_file")?;
    }
    let text =
        Zeroizing::new(std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read the directory password file {}", path.display())
        })?);
    // A trailing newline from `echo` or an editor is not part of the password.
    let password = Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned());
    if password.is_empty() {
        bail!(
            "the directory password file {} is empty (an empty password is an unauthenticated bind)",
            path.display()
        );
    }
    Ok(password)
}

#[cfg(test)]
#[path = "directory_tests.rs"]
mod tests;
