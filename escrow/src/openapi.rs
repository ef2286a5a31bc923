//! The OpenAPI 3.1 document of /api/v1, generated from the routes and wire types (utoipa: each
//! handler carries its `#[utoipa::path]`, each body its `ToSchema`) and served at
//! GET /api/v1/openapi.json. `docs/openapi.json` is a copy; a test fails when they differ.
//! Regenerate it with:
//!
//! ```text
//! UPDATE_OPENAPI=1 cargo test --release -p escrow --lib openapi
//! ```
//!
//! Only what is the same for every operation is added here: the document's header, the security
//! schemes, and the answers of authentication (401/403 by scheme) and of the server (503).

use std::sync::OnceLock;

use serde_json::{Value, json};

/// The description of an error answer with the common `{"error": {...}}` body.
fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

/// Adds the answers every operation of a security scheme shares, unless the operation states
/// its own (e.g. /enroll's 401 and 403 say more).
fn add_common_responses(op: &mut Value) {
    let scheme = op["security"]
        .as_array()
        .and_then(|s| s.first())
        .and_then(Value::as_object)
        .and_then(|o| o.keys().next().cloned());
    let mut common = Vec::new();
    match scheme.as_deref() {
        Some("bearerToken") => {
            common.push(("401", "missing, unknown, expired or revoked API token"));
            common.push(("403", "the operator's role does not allow this"));
        }
        Some("deviceCertificate") => {
            common.push((
                "401",
                "no client certificate presented (mutual TLS required)",
            ));
            common.push(("403", "client certificate not enrolled, or device revoked"));
        }
        _ => {}
    }
    common.push(("503", "database unavailable or request_timeout exceeded"));
    if let Some(responses) = op["responses"].as_object_mut() {
        for (status, description) in common {
            responses
                .entry(status)
                .or_insert_with(|| error_response(description));
        }
    }
}

/// The document as a JSON value.
pub fn document() -> Value {
    let (_, api) = crate::api::routes().split_for_parts();
    let mut doc = serde_json::to_value(&api).unwrap_or_else(|_| json!({}));
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({
        "title": "netunlockd escrow API",
        "version": "1",
        "description": "BitLocker recovery-key escrow. Agents authenticate with the client certificate bound at enrollment (mutual TLS); operators with personal bearer tokens (roles admin, helpdesk, auditor). Every error body is {\"error\": {\"code\", \"message\"}}. Answers name GUIDs in braced upper case.",
        "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
    });
    doc["servers"] = json!([{ "url": "https://{host}:{port}", "variables": { "host": { "default": "escrow.example" }, "port": { "default": "8443" } } }]);
    doc["tags"] = json!([
        { "name": "agent" }, { "name": "helpdesk" }, { "name": "reports" },
        { "name": "devices" }, { "name": "operators" }, { "name": "meta" },
    ]);
    doc["components"]["securitySchemes"] = json!({
        "bearerToken": { "type": "http", "scheme": "bearer", "description": "personal operator API token" },
        "deviceCertificate": { "type": "mutualTLS", "description": "the client certificate bound at enrollment" },
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            if let Some(ops) = item.as_object_mut() {
                for op in ops.values_mut() {
                    add_common_responses(op);
                }
            }
        }
    }
    doc
}

/// Pretty JSON text with a trailing newline, computed once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut s = serde_json::to_string_pretty(&document()).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    })
}

/// Every (method, path template) the document describes, which is every route served.
pub fn documented_routes() -> Vec<(String, String)> {
    let doc = document();
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            if let Some(ops) = item.as_object() {
                out.extend(ops.keys().map(|m| (m.clone(), path.clone())));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::limits;

    #[test]
    fn every_schema_reference_resolves() {
        let text = document_json();
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
    }

    #[test]
    fn the_document_states_the_enforced_limits() {
        let doc = document();
        let s = &doc["components"]["schemas"];
        assert_eq!(
            s["EscrowBody"]["properties"]["items"]["maxItems"],
            json!(limits::MAX_PROTECTORS_PER_ESCROW)
        );
        assert_eq!(s["EscrowBody"]["properties"]["items"]["minItems"], json!(1));
        assert_eq!(
            s["CheckInBody"]["properties"]["protectors"]["maxItems"],
            json!(limits::MAX_CHECKIN_ENTRIES)
        );
        let kp = s["EscrowItem"]["properties"]["key_package"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            kp.contains(&limits::MAX_KEY_PACKAGE_BYTES.to_string()),
            "{kp}"
        );
        let mp = s["EscrowItem"]["properties"]["mount_point"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            mp.contains(&limits::MAX_MOUNT_POINT_CHARS.to_string()),
            "{mp}"
        );
        // Requests refuse unknown fields, and the document says so.
        for name in ["EscrowBody", "EscrowItem", "EnrollRequest", "CheckInBody"] {
            assert_eq!(s[name]["additionalProperties"], json!(false), "{name}");
        }
    }

    #[test]
    fn every_operation_answers_errors_in_the_common_shape() {
        let doc = document();
        for (method, path) in documented_routes() {
            let op = &doc["paths"][&path][&method];
            assert!(op["summary"].is_string(), "{method} {path}");
            assert!(op["responses"]["503"].is_object(), "{method} {path}");
        }
        let enroll = &doc["paths"]["/api/v1/enroll"]["post"]["responses"];
        assert!(
            enroll["401"]["description"]
                .as_str()
                .unwrap_or_default()
                .contains("no client certificate")
        );
        assert!(
            enroll["403"]["description"]
                .as_str()
                .unwrap_or_default()
                .contains("revoked")
        );
        assert!(
            enroll["409"]["description"]
                .as_str()
                .unwrap_or_default()
                .contains("another certificate")
        );
    }

    #[test]
    fn docs_copy_matches_the_served_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, document_json()).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == document_json(),
            "docs/openapi.json differs from the served document; run UPDATE_OPENAPI=1 cargo test --release -p escrow --lib openapi"
        );
    }
}
