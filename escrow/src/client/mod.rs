//! `ApiClient`: the HTTPS client the `netunlockd escrow|operator|enroll-token` commands (and the
//! e2e tests and load tool) use to talk to a running daemon, so that every operator action goes
//! through the same authorisation and audit as the API.

mod tls;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::wire::*;
pub use tls::{PinnedServerCertVerifier, ServerTrust, client_tls_config, normalise_fingerprint};
pub use zeroize::Zeroizing;

/// Errors of `ApiClient`; `Api` carries the server's error code and message verbatim.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client configuration: {0}")]
    Config(String),
    #[error("cannot reach the escrow API: {0}")]
    Transport(String),
    #[error("the escrow API answered {status}: {message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the escrow API answered with a body this client does not understand: {0}")]
    Decode(String),
}

impl ClientError {
    /// HTTP status of an API error, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Everything needed to build an `ApiClient`.
#[derive(Debug, Clone)]
pub struct ApiClientConfig {
    /// e.g. `https://escrow.example:8443` (the `/api/v1` prefix is added by the client).
    pub base_url: String,
    pub trust: ServerTrust,
    /// Operator bearer token; `None` for agents (they use `identity`).
    pub token: Option<Zeroizing<String>>,
    /// Agent certificate + key PEM files for mutual TLS.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub timeout: Duration,
}

/// A connection-pooling (keep-alive) client for one escrow server.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    token: Option<Arc<Zeroizing<String>>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// Builds the client (reads the trust and identity files now).
    pub fn new(config: &ApiClientConfig) -> Result<Self, ClientError> {
        let identity = config
            .identity
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let tls = client_tls_config(&config.trust, identity)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let mut base = Url::parse(config.base_url.trim_end_matches('/')).map_err(|e| {
            ClientError::Config(format!("invalid escrow URL {:?}: {e}", config.base_url))
        })?;
        if base.scheme() != "https" {
            return Err(ClientError::Config(format!(
                "the escrow URL must start with https:// (got {:?})",
                config.base_url
            )));
        }
        let path = format!("{}/api/v1/", base.path().trim_end_matches('/'));
        base.set_path(&path);
        Ok(Self {
            http,
            base,
            token: config.token.clone().map(Arc::new),
        })
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url, ClientError> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| ClientError::Config(format!("bad API path {path:?}: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn raw<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self.http.request(method, self.url(path, query)?);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.as_str());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => ClientError::Api {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: "http_error".into(),
                message: status.canonical_reason().unwrap_or("error").to_string(),
            },
        })
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let resp = self.raw(method, path, query, body).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// GETs a list: one page when `query` names a cursor or limit, else every page, joined
    /// (following `next`, so nothing is cut short).
    async fn get_list<T: DeserializeOwned + Paged>(
        &self,
        path: &str,
        mut query: Vec<(&str, String)>,
    ) -> Result<T, ClientError> {
        let one_page = query.iter().any(|(k, _)| *k == "cursor" || *k == "limit");
        let mut all: T = self.call::<(), _>(Method::GET, path, &query, None).await?;
        if one_page {
            return Ok(all);
        }
        query.push(("limit", crate::model::limits::MAX_PAGE_SIZE.to_string()));
        while let Some(cursor) = all.take_next() {
            query.retain(|(k, _)| *k != "cursor");
            query.push(("cursor", cursor));
            let page: T = self.call::<(), _>(Method::GET, path, &query, None).await?;
            all.append(page);
        }
        Ok(all)
    }

    async fn call_no_content<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        // `raw` has already turned every non-2xx answer into an error.
        self.raw(method, path, &[], body).await.map(|_| ())
    }

    /// `GET /health` (no authentication).
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call::<(), _>(Method::GET, "health", &[], None).await
    }

    // ---- agent routes (need `identity`) ----

    /// `POST /enroll`: binds this client's certificate to `computer_name` using an enrollment token.
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<DeviceView, ClientError> {
        self.call(Method::POST, "enroll", &[], Some(req)).await
    }

    /// `POST /agent/escrow`. A mismatch comes back as `ClientError::Api { status: 409, .. }`.
    pub async fn escrow(&self, body: &EscrowBody) -> Result<EscrowResponse, ClientError> {
        self.call(Method::POST, "agent/escrow", &[], Some(body))
            .await
    }

    /// `POST /agent/checkin`: returns the protectors this device must rotate.
    pub async fn check_in(&self, body: &CheckInBody) -> Result<CheckInResponse, ClientError> {
        self.call(Method::POST, "agent/checkin", &[], Some(body))
            .await
    }

    /// `POST /agent/rotation`: reports progress of a two-phase rotation.
    pub async fn report_rotation(
        &self,
        body: &RotationReport,
    ) -> Result<RotationStateResponse, ClientError> {
        self.call(Method::POST, "agent/rotation", &[], Some(body))
            .await
    }

    /// `GET /agent/keys`: this device's own keys (no secrets).
    pub async fn own_keys(&self) -> Result<KeyList, ClientError> {
        self.call::<(), _>(Method::GET, "agent/keys", &[], None)
            .await
    }

    // ---- operator routes (need `token`) ----

    /// `GET /me`: who the token belongs to.
    pub async fn me(&self) -> Result<Me, ClientError> {
        self.call::<(), _>(Method::GET, "me", &[], None).await
    }

    /// `GET /keys?prefix=`: candidates whose recovery key ID starts with these 8 hex digits.
    pub async fn find_by_prefix(&self, prefix8: &str) -> Result<KeyList, ClientError> {
        self.get_list("keys", vec![("prefix", prefix8.to_string())])
            .await
    }

    /// `GET /keys?device=`: every key of one device (history included).
    pub async fn find_by_device(&self, device_name: &str) -> Result<KeyList, ClientError> {
        self.get_list("keys", vec![("device", device_name.to_string())])
            .await
    }

    /// `POST /keys/{protector_id}/disclose`: returns the recovery password (audited, rotation queued).
    pub async fn disclose(
        &self,
        protector_id: &str,
        body: &DiscloseBody,
    ) -> Result<DisclosureResponse, ClientError> {
        let path = format!("keys/{}/disclose", encode_segment(protector_id));
        self.call(Method::POST, &path, &[], Some(body)).await
    }

    /// `GET /reports/audit` as JSON: every record, or one page when `query` names a cursor or limit.
    pub async fn audit_report(&self, query: &AuditQuery) -> Result<AuditList, ClientError> {
        self.get_list("reports/audit", query.pairs()).await
    }

    /// `GET /reports/audit?format=csv`: the CSV export, verbatim.
    pub async fn audit_report_csv(&self, query: &AuditQuery) -> Result<String, ClientError> {
        let mut pairs = query.pairs();
        pairs.push(("format", "csv".into()));
        let resp = self
            .raw::<()>(Method::GET, "reports/audit", &pairs, None)
            .await?;
        resp.text()
            .await
            .map_err(|e| ClientError::Transport(error_chain(&e)))
    }

    /// `GET /reports/audit?format=csv`, written into `out` chunk by chunk as it arrives (constant
    /// memory whatever the size of the log); returns the number of bytes written. A transfer the
    /// server aborts is an error, never a silently shorter file.
    pub async fn audit_report_csv_to<W: std::io::Write>(
        &self,
        query: &AuditQuery,
        out: &mut W,
    ) -> Result<u64, ClientError> {
        let mut pairs = query.pairs();
        pairs.push(("format", "csv".into()));
        let mut resp = self
            .raw::<()>(Method::GET, "reports/audit", &pairs, None)
            .await?;
        let mut written = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ClientError::Transport(error_chain(&e)))?
        {
            out.write_all(&chunk)
                .map_err(|e| ClientError::Config(format!("cannot write the export: {e}")))?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    /// `GET /reports/fleet?stale_days=`.
    pub async fn fleet_report(&self, stale_days: Option<u32>) -> Result<FleetView, ClientError> {
        let q: Vec<(&str, String)> = stale_days
            .map(|d| vec![("stale_days", d.to_string())])
            .unwrap_or_default();
        self.call::<(), _>(Method::GET, "reports/fleet", &q, None)
            .await
    }

    /// `GET /reports/unlocks`: devices without a Network Unlock in the window, unknown adapters.
    pub async fn unlock_report(&self, days: Option<u32>) -> Result<UnlockFleetReport, ClientError> {
        let q: Vec<(&str, String)> = days
            .map(|d| vec![("days", d.to_string())])
            .unwrap_or_default();
        self.call::<(), _>(Method::GET, "reports/unlocks", &q, None)
            .await
    }

    /// `GET /audit/verify`: checks the audit hash chain on the server.
    pub async fn verify_audit(&self) -> Result<ChainView, ClientError> {
        self.call::<(), _>(Method::GET, "audit/verify", &[], None)
            .await
    }

    /// `GET /devices`.
    pub async fn list_devices(&self, query: &DeviceQuery) -> Result<DeviceList, ClientError> {
        self.get_list("devices", query.pairs()).await
    }

    /// `POST /devices/{id}/revoke`: the device's certificate stops working at once.
    pub async fn revoke_device(&self, device_id: &str) -> Result<(), ClientError> {
        let path = format!("devices/{}/revoke", encode_segment(device_id));
        self.call_no_content::<()>(Method::POST, &path, None).await
    }

    /// `POST /devices/{id}/allow-reenroll`: the next enrollment for this name may bind a new cert.
    pub async fn allow_reenroll(&self, device_id: &str) -> Result<(), ClientError> {
        let path = format!("devices/{}/allow-reenroll", encode_segment(device_id));
        self.call_no_content::<()>(Method::POST, &path, None).await
    }

    /// `POST /enrollment-tokens`: the secret is in the answer, shown once.
    pub async fn create_enrollment_token(
        &self,
        body: &CreateEnrollmentToken,
    ) -> Result<CreatedEnrollmentToken, ClientError> {
        self.call(Method::POST, "enrollment-tokens", &[], Some(body))
            .await
    }

    /// `GET /enrollment-tokens`.
    pub async fn list_enrollment_tokens(&self) -> Result<EnrollmentTokenList, ClientError> {
        self.get_list("enrollment-tokens", Vec::new()).await
    }

    /// `POST /enrollment-tokens/{id}/revoke`.
    pub async fn revoke_enrollment_token(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("enrollment-tokens/{}/revoke", encode_segment(id));
        self.call_no_content::<()>(Method::POST, &path, None).await
    }

    /// `POST /operators`.
    pub async fn create_operator(
        &self,
        body: &CreateOperator,
    ) -> Result<OperatorView, ClientError> {
        self.call(Method::POST, "operators", &[], Some(body)).await
    }

    /// `GET /operators`.
    pub async fn list_operators(&self) -> Result<OperatorList, ClientError> {
        self.get_list("operators", Vec::new()).await
    }

    /// `POST /operators/{id}/role`.
    pub async fn set_operator_role(&self, id: &str, role: &str) -> Result<(), ClientError> {
        let path = format!("operators/{}/role", encode_segment(id));
        let body = SetRole {
            role: role.to_string(),
        };
        self.call_no_content(Method::POST, &path, Some(&body)).await
    }

    /// `POST /operators/{id}/disable`: the operator's tokens stop working.
    pub async fn disable_operator(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("operators/{}/disable", encode_segment(id));
        self.call_no_content::<()>(Method::POST, &path, None).await
    }

    /// `POST /tokens`: a personal API token for an operator; the secret is shown once.
    pub async fn create_api_token(
        &self,
        body: &CreateApiToken,
    ) -> Result<CreatedApiToken, ClientError> {
        self.call(Method::POST, "tokens", &[], Some(body)).await
    }

    /// `GET /tokens`: API tokens without secrets (every page unless `query` names a cursor or limit).
    pub async fn list_api_tokens(
        &self,
        query: &ApiTokenQuery,
    ) -> Result<ApiTokenList, ClientError> {
        self.get_list("tokens", query.pairs()).await
    }

    /// `POST /tokens/{id}/revoke`.
    pub async fn revoke_api_token(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("tokens/{}/revoke", encode_segment(id));
        self.call_no_content::<()>(Method::POST, &path, None).await
    }

    /// Sends a request with an arbitrary method, path (below /api/v1/) and raw body; returns the
    /// status and body. For tests and diagnostics.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let (status, _, bytes) = self.request_raw_with_headers(method, path, body).await?;
        Ok((status, bytes))
    }

    /// [`Self::request_raw`] that also returns the response headers.
    pub async fn request_raw_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), ClientError> {
        let mut req = self.http.request(method, self.url(path, &[])?);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.as_str());
        }
        if let Some((content_type, bytes)) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Transport(error_chain(&e)))?;
        Ok((status, headers, bytes.to_vec()))
    }
}

/// A list answer: its items and the cursor of the next page.
trait Paged {
    fn take_next(&mut self) -> Option<String>;
    fn append(&mut self, page: Self);
}

macro_rules! paged {
    ($t:ty, $items:ident) => {
        impl Paged for $t {
            fn take_next(&mut self) -> Option<String> {
                self.next.take()
            }
            fn append(&mut self, page: Self) {
                self.$items.extend(page.$items);
                self.next = page.next;
            }
        }
    };
}
paged!(KeyList, keys);
paged!(DeviceList, devices);
paged!(AuditList, records);
paged!(EnrollmentTokenList, tokens);
paged!(OperatorList, operators);
paged!(ApiTokenList, tokens);

/// Path segments here are ids and GUIDs; percent-encode anything else defensively.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'{' | b'}') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// reqwest hides the interesting part (e.g. the TLS reason) in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Convenience for agents and tests: a client with a certificate identity and no token.
pub fn agent_client(
    base_url: &str,
    trust: ServerTrust,
    cert: &Path,
    key: &Path,
) -> Result<ApiClient, ClientError> {
    ApiClient::new(&ApiClientConfig {
        base_url: base_url.to_string(),
        trust,
        token: None,
        identity: Some((cert.to_owned(), key.to_owned())),
        timeout: Duration::from_secs(30),
    })
}
