//! The LDAP side of a sign-in: connect over LDAPS or StartTLS (rustls with the aws-lc-rs provider,
//! the configured CA or the system bundle, the server name checked), bind as the person, read their
//! entry and groups. Every step has a timeout; referrals are not chased.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3::asn1::{PL, StructureTag};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, ResultEntry, Scope, SearchOptions};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;

use super::config::{BindMethod, DirectoryConfig, GroupLookup, MAX_PASSWORD, MAX_USER_NAME};
use super::escape::{dn_value, fill, filter_value};
use super::refusal::{self, Refusal, STATE_ATTRIBUTES};
use super::roles::RoleMapping;
use crate::model::Role;

/// LDAP result codes the sign-in distinguishes (RFC 4511 §4.1.9).
mod rc {
    pub const SUCCESS: u32 = 0;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const STRONGER_AUTH_REQUIRED: u32 = 8;
    pub const REFERRAL: u32 = 10;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const UNWILLING_TO_PERFORM: u32 = 53;
}

/// Why a directory sign-in did not produce a person.
#[derive(Debug, Error)]
pub enum DirectoryError {
    /// The person may not sign in (wrong password, disabled, no role group, …): show a generic refusal.
    #[error("sign-in refused ({0})")]
    Refused(Refusal),
    /// The directory could not be reached or did not answer in time (network, DNS, TLS handshake,
    /// certificate verification).
    #[error("the directory {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The directory answered, but the configuration does not work with it (service account refused,
    /// search base missing, stronger authentication demanded).
    #[error("the directory configuration does not work: {0}")]
    Misconfigured(String),
    /// The directory sent something unexpected.
    #[error("unexpected answer from the directory: {0}")]
    Protocol(String),
}

/// A person the directory authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The name as typed (trimmed).
    pub user_name: String,
    /// Their entry's DN as the directory returned it.
    pub dn: String,
    /// Every group DN found for them (mapped or not).
    pub groups: Vec<String>,
    /// The highest mapped role and the (normalised) group that granted it; None: no role group.
    pub role: Option<(Role, String)>,
}

/// A configured directory: validated settings plus the TLS configuration built once.
#[derive(Clone)]
pub struct Directory {
    config: DirectoryConfig,
    tls: Arc<ClientConfig>,
    mapping: RoleMapping,
}

/// Whose credentials a bind checks (see `Directory::bind`).
#[derive(Clone, Copy, Debug)]
enum Binder {
    Service,
    User,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// Validate `config` and build its TLS client configuration (the CA PEM, or the system's CA
    /// bundle when none is configured).
    pub fn new(config: DirectoryConfig) -> Result<Self, DirectoryError> {
        config.validate().map_err(DirectoryError::Misconfigured)?;
        let tls = Arc::new(tls_config(&config.ca_pem)?);
        let mapping = config.role_mapping();
        Ok(Self {
            config,
            tls,
            mapping,
        })
    }

    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// Authenticate `user_name` with `password` and read their groups. Input is checked before the
    /// directory is contacted (an empty password would be an unauthenticated bind).
    pub async fn authenticate(
        &self,
        user_name: &str,
        password: &str,
    ) -> Result<DirectoryUser, DirectoryError> {
        let user = user_name.trim();
        if user.is_empty()
            || user.chars().count() > MAX_USER_NAME
            || user.chars().any(char::is_control)
        {
            return Err(DirectoryError::Refused(Refusal::InvalidUserName));
        }
        if password.is_empty() {
            return Err(DirectoryError::Refused(Refusal::EmptyPassword));
        }
        if password.len() > MAX_PASSWORD {
            return Err(DirectoryError::Refused(Refusal::WrongPassword));
        }
        let mut ldap = self.connect().await?;
        let result = self.authenticate_on(&mut ldap, user, password).await;
        // Best effort: the connection closes when `ldap` and its driver are dropped anyway.
        let _ = tokio::time::timeout(Duration::from_secs(1), ldap.unbind()).await;
        result
    }

    /// Connect and, with a service account, bind as it: proves the URL, TLS trust and credentials
    /// work (for `config check --online`-style probes and health checks).
    pub async fn probe(&self) -> Result<(), DirectoryError> {
        let mut ldap = self.connect().await?;
        if let BindMethod::SearchThenBind { dn, password } = &self.config.bind {
            self.bind(&mut ldap, dn, password, Binder::Service).await?;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), ldap.unbind()).await;
        Ok(())
    }

    async fn authenticate_on(
        &self,
        ldap: &mut Ldap,
        user: &str,
        password: &str,
    ) -> Result<DirectoryUser, DirectoryError> {
        let entry = match &self.config.bind {
            BindMethod::SearchThenBind {
                dn: service_dn,
                password: service_password,
            } => {
                self.bind(ldap, service_dn, service_password, Binder::Service)
                    .await?;
                let entry = self.find_user(ldap, user).await?;
                if let Some(r) = refusal::from_entry(&entry.attrs) {
                    return Err(DirectoryError::Refused(r));
                }
                self.bind(ldap, &entry.dn, password, Binder::User).await?;
                // Groups are read with the service account's rights, not the person's.
                self.bind(ldap, service_dn, service_password, Binder::Service)
                    .await?;
                entry
            }
            BindMethod::Template(template) => {
                let value = if DirectoryConfig::template_is_dn(template) {
                    dn_value(user)
                } else {
                    user.to_owned()
                };
                self.bind(
                    ldap,
                    &fill(template, "user", &value),
                    password,
                    Binder::User,
                )
                .await?;
                let entry = self.find_user(ldap, user).await?;
                if let Some(r) = refusal::from_entry(&entry.attrs) {
                    return Err(DirectoryError::Refused(r));
                }
                entry
            }
        };
        let groups = match &self.config.groups {
            GroupLookup::MemberOf => entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("memberOf"))
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            GroupLookup::Search { base, filter } => {
                let filter = fill(
                    &fill(filter, "dn", &filter_value(&entry.dn)),
                    "user",
                    &filter_value(user),
                );
                self.search(ldap, base, &filter, &["1.1"], None)
                    .await?
                    .into_iter()
                    .map(|e| e.dn)
                    .collect()
            }
        };
        let role = self.mapping.role_for(&groups);
        Ok(DirectoryUser {
            user_name: user.to_owned(),
            dn: entry.dn,
            groups,
            role,
        })
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(self.config.connect_timeout)
            .set_starttls(self.config.starttls)
            .set_config(self.tls.clone());
        // The TLS handshake and StartTLS exchange are bounded too, not only the TCP connect.
        let budget = self.config.connect_timeout + self.config.operation_timeout;
        let (conn, ldap) = tokio::time::timeout(
            budget,
            LdapConnAsync::with_settings(settings, &self.config.url),
        )
        .await
        .map_err(|_| self.unreachable(format!("no connection within {budget:?}")))?
        .map_err(|e| self.unreachable(describe(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "directory connection ended");
            }
        });
        Ok(ldap)
    }

    fn unreachable(&self, reason: String) -> DirectoryError {
        DirectoryError::Unreachable {
            url: self.config.url.clone(),
            reason,
        }
    }

    /// A simple bind as the service account or as the person signing in. Only the answer to a
    /// refusal differs: a refused service account is the appliance's configuration problem, a
    /// refused person is a sign-in refusal with its reason.
    async fn bind(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &str,
        who: Binder,
    ) -> Result<(), DirectoryError> {
        let res = ldap
            .with_timeout(self.config.operation_timeout)
            .simple_bind(dn, password)
            .await
            .map_err(|e| self.op_error(e))?;
        match (res.rc, who) {
            (rc::SUCCESS, _) => Ok(()),
            (rc::INVALID_CREDENTIALS, Binder::Service) => {
                Err(DirectoryError::Misconfigured(format!(
                    "the directory refused the service account {dn:?} (wrong password, or the account is disabled or locked)"
                )))
            }
            (rc::INVALID_CREDENTIALS, Binder::User) => Err(DirectoryError::Refused(
                refusal::from_bind_failure(&res.text),
            )),
            // Some directories answer a disabled or locked account this way.
            (rc::UNWILLING_TO_PERFORM, Binder::User) => {
                Err(DirectoryError::Refused(Refusal::AccountDisabled))
            }
            (other, _) => Err(self.bind_result_error(other, &res.text)),
        }
    }

    fn bind_result_error(&self, code: u32, text: &str) -> DirectoryError {
        match code {
            rc::STRONGER_AUTH_REQUIRED => DirectoryError::Misconfigured(format!(
                "the directory demands stronger authentication for a simple bind ({text}); use ldaps:// or starttls"
            )),
            _ => DirectoryError::Protocol(format!("bind answered result code {code}: {text}")),
        }
    }

    async fn find_user(&self, ldap: &mut Ldap, user: &str) -> Result<Entry, DirectoryError> {
        let filter = fill(&self.config.user_filter, "user", &filter_value(user));
        let mut attrs: Vec<&str> = STATE_ATTRIBUTES.to_vec();
        if self.config.groups == GroupLookup::MemberOf {
            attrs.push("memberOf");
        }
        let mut found = self
            .search(ldap, &self.config.user_base, &filter, &attrs, Some(2))
            .await?;
        match found.len() {
            0 => Err(DirectoryError::Refused(Refusal::NoSuchUser)),
            1 => Ok(found.remove(0)),
            _ => Err(DirectoryError::Refused(Refusal::AmbiguousUser)),
        }
    }

    /// Subtree search returning entries (referrals skipped). With `size_limit`, hitting the limit
    /// yields `limit` entries so the caller can tell "more than one" apart.
    async fn search(
        &self,
        ldap: &mut Ldap,
        base: &str,
        filter: &str,
        attrs: &[&str],
        size_limit: Option<i32>,
    ) -> Result<Vec<Entry>, DirectoryError> {
        let mut options = SearchOptions::new();
        if let Some(limit) = size_limit {
            options = options.sizelimit(limit);
        }
        let result = ldap
            .with_timeout(self.config.operation_timeout)
            .with_search_options(options)
            .search(base, Scope::Subtree, filter, attrs.to_vec())
            .await
            .map_err(|e| self.op_error(e))?;
        let (entries, res) = (result.0, result.1);
        match res.rc {
            rc::SUCCESS | rc::REFERRAL => {}
            rc::SIZE_LIMIT_EXCEEDED if size_limit.is_some() => {}
            rc::NO_SUCH_OBJECT => {
                return Err(DirectoryError::Misconfigured(format!(
                    "the search base {base:?} does not exist in the directory"
                )));
            }
            code => {
                return Err(DirectoryError::Protocol(format!(
                    "search under {base:?} answered result code {code}: {}",
                    res.text
                )));
            }
        }
        let mut out = Vec::new();
        for e in entries {
            if e.is_ref() || e.is_intermediate() {
                continue;
            }
            out.push(parse_entry(e).ok_or_else(|| {
                DirectoryError::Protocol("a search result entry is malformed".into())
            })?);
        }
        Ok(out)
    }

    fn op_error(&self, e: LdapError) -> DirectoryError {
        match e {
            LdapError::Timeout { .. } => self.unreachable(format!(
                "no answer within {:?}",
                self.config.operation_timeout
            )),
            LdapError::Io { .. } | LdapError::ResultRecv { .. } | LdapError::OpSend { .. } => {
                self.unreachable(describe(&e))
            }
            other => DirectoryError::Protocol(describe(&other)),
        }
    }
}

/// Turn a connection error into a sentence an operator can act on.
fn describe(e: &LdapError) -> String {
    match e {
        LdapError::Rustls { source } => format!(
            "TLS failed: {source} (is the directory's certificate signed by the configured CA, and does it name this host?)"
        ),
        LdapError::DNSName { .. } => "the URL's host is not a valid TLS server name".to_owned(),
        // tokio-rustls reports handshake failures as I/O errors wrapping the rustls error.
        LdapError::Io { source } => match source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => format!(
                "TLS failed: {tls} (is the directory's certificate signed by the configured CA, and does it name this host?)"
            ),
            None => source.to_string(),
        },
        LdapError::LdapResult { result } => format!(
            "the directory refused StartTLS (result code {}: {})",
            result.rc, result.text
        ),
        other => other.to_string(),
    }
}

/// One entry: DN and string-valued attributes.
#[derive(Clone, Debug, Default)]
struct Entry {
    dn: String,
    attrs: HashMap<String, Vec<String>>,
}

/// Parse a SearchResultEntry (RFC 4511 §4.5.2) without panicking on malformed input (ldap3's
/// `SearchEntry::construct` panics, and the daemon aborts on panics). Binary values are skipped.
fn parse_entry(re: ResultEntry) -> Option<Entry> {
    let StructureTag {
        id: 4,
        payload: PL::C(parts),
        ..
    } = re.0
    else {
        return None;
    };
    let mut parts = parts.into_iter();
    let dn = String::from_utf8(primitive(parts.next()?)?).ok()?;
    let PL::C(attributes) = parts.next()?.payload else {
        return None;
    };
    let mut attrs = HashMap::new();
    for attribute in attributes {
        let PL::C(pair) = attribute.payload else {
            return None;
        };
        let mut pair = pair.into_iter();
        let name = String::from_utf8(primitive(pair.next()?)?).ok()?;
        let PL::C(values) = pair.next()?.payload else {
            return None;
        };
        let values = values
            .into_iter()
            .filter_map(|v| primitive(v).and_then(|b| String::from_utf8(b).ok()))
            .collect();
        attrs.insert(name, values);
    }
    Some(Entry { dn, attrs })
}

fn primitive(tag: StructureTag) -> Option<Vec<u8>> {
    match tag.payload {
        PL::P(bytes) => Some(bytes),
        PL::C(_) => None,
    }
}

/// rustls client configuration on the aws-lc-rs provider: the CA certificates in `ca_pem`, or the
/// system's CA bundle when it is empty.
fn tls_config(ca_pem: &[u8]) -> Result<ClientConfig, DirectoryError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    if ca_pem.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A system bundle may hold certificates rustls cannot use; skip those.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(DirectoryError::Misconfigured(
                "no CA file is configured and the system CA bundle is empty or unreadable; set ca_file".into(),
            ));
        }
    } else {
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| {
                DirectoryError::Misconfigured(format!("the CA file is not valid PEM: {e}"))
            })?;
            roots.add(cert).map_err(|e| {
                DirectoryError::Misconfigured(format!(
                    "the CA file holds a certificate rustls cannot use as a root: {e}"
                ))
            })?;
        }
        if roots.is_empty() {
            return Err(DirectoryError::Misconfigured(
                "the CA file holds no PEM certificate".into(),
            ));
        }
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| DirectoryError::Misconfigured(e.to_string()))?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| DirectoryError::Misconfigured(e.to_string()))?
        .with_webpki_verifier(verifier)
        .with_no_client_auth())
}
