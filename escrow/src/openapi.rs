//! The OpenAPI 3.1 document of /api/v1, built here and served at GET /api/v1/openapi.json.
//! `docs/openapi.json` is a copy; a test fails when they differ (regenerate with
//! `UPDATE_OPENAPI=1 cargo test -p escrow openapi`), and another when a route is undocumented.

use std::sync::OnceLock;

use serde_json::{Value, json};

fn map_of(entries: Vec<(&str, Value)>) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": r(schema) } } })
}

fn ok(status: &str, description: &str, schema: Option<&str>) -> (String, Value) {
    let v = match schema {
        Some(s) => {
            json!({ "description": description, "content": { "application/json": { "schema": r(s) } } })
        }
        None => json!({ "description": description }),
    };
    (status.to_string(), v)
}

fn err(status: &str, description: &str) -> (String, Value) {
    (
        status.to_string(),
        json!({ "description": description, "content": { "application/json": { "schema": r("Error") } } }),
    )
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

#[derive(Clone, Copy)]
enum Auth {
    None,
    Operator,
    Device,
}

struct Op<'a> {
    summary: &'a str,
    description: &'a str,
    tag: &'a str,
    auth: Auth,
    params: Vec<Value>,
    request: Option<&'a str>,
    responses: Vec<(String, Value)>,
}

fn op(o: Op<'_>) -> Value {
    let mut responses = serde_json::Map::new();
    for (k, v) in o.responses {
        responses.insert(k, v);
    }
    match o.auth {
        Auth::Operator => {
            responses.insert(
                "401".into(),
                err("401", "missing, unknown, expired or revoked API token").1,
            );
            responses.insert(
                "403".into(),
                err("403", "the operator's role does not allow this").1,
            );
        }
        Auth::Device => {
            responses.insert(
                "401".into(),
                err(
                    "401",
                    "no client certificate presented (mutual TLS required)",
                )
                .1,
            );
            responses.insert(
                "403".into(),
                err("403", "client certificate not enrolled, or device revoked").1,
            );
        }
        Auth::None => {}
    }
    responses.insert(
        "503".into(),
        err("503", "database unavailable or request_timeout exceeded").1,
    );
    let mut v = json!({
        "summary": o.summary,
        "description": o.description,
        "tags": [o.tag],
        "security": match o.auth {
            Auth::None => json!([]),
            Auth::Operator => json!([{ "bearerToken": [] }]),
            Auth::Device => json!([{ "deviceCertificate": [] }]),
        },
        "responses": responses,
    });
    if !o.params.is_empty() {
        v["parameters"] = Value::Array(o.params);
    }
    if let Some(req) = o.request {
        v["requestBody"] = body(req);
    }
    v
}

fn bad_request() -> (String, Value) {
    err(
        "400",
        "invalid JSON, unknown field, or a value that fails validation (the message says which)",
    )
}

fn paths() -> Value {
    map_of(vec![
        (
            "/api/v1/health",
            json!({ "get": op(Op { summary: "Liveness", description: "Always 200 while the server runs.", tag: "meta", auth: Auth::None, params: vec![], request: None,
            responses: vec![ok("200", "running", Some("Health"))] }) }),
        ),
        (
            "/api/v1/openapi.json",
            json!({ "get": op(Op { summary: "This document", description: "The OpenAPI 3.1 description of the API (identical to docs/openapi.json).", tag: "meta", auth: Auth::None, params: vec![], request: None,
            responses: vec![(String::from("200"), json!({ "description": "OpenAPI document", "content": { "application/json": { "schema": { "type": "object" } } } }))] }) }),
        ),
        (
            "/api/v1/me",
            json!({ "get": op(Op { summary: "Who am I", description: "The operator behind the bearer token.", tag: "operators", auth: Auth::Operator, params: vec![], request: None,
            responses: vec![ok("200", "identity", Some("Me"))] }) }),
        ),
        (
            "/api/v1/enroll",
            json!({ "post": op(Op { summary: "Enroll a device", description: "Binds the SHA-256 of the TLS client certificate presented on this connection to the computer, using an enrollment token. Needs a client certificate but no bearer token.", tag: "agent", auth: Auth::None, params: vec![], request: Some("EnrollRequest"),
            responses: vec![ok("201", "enrolled", Some("Device")), bad_request(), err("401", "the enrollment token is unknown, or no client certificate was presented"), err("403", "the device is revoked; an admin must allow re-enrollment"), err("409", "the computer is enrolled with another certificate, or this certificate is bound to another device"), err("410", "enrollment token expired, revoked or used up"), err("413", "body larger than max_body_bytes")] }) }),
        ),
        (
            "/api/v1/agent/escrow",
            json!({ "post": op(Op { summary: "Escrow recovery passwords", description: "Idempotent upsert per (device, volume, protector). Re-sending identical data answers `unchanged`; the same protector ID with a different password is refused (409, outcome `mismatch`) and recorded.", tag: "agent", auth: Auth::Device, params: vec![], request: Some("EscrowBody"),
            responses: vec![ok("200", "every item stored or unchanged", Some("EscrowResponse")), bad_request(),
                (String::from("409"), json!({ "description": "at least one item is a mismatch; the other items' outcomes are in results", "content": { "application/json": { "schema": r("EscrowConflict") } } })),
                err("413", "body larger than max_body_bytes")] }) }),
        ),
        (
            "/api/v1/agent/checkin",
            json!({ "post": op(Op { summary: "Check in", description: "Reports the protectors present on the device; the answer lists the protectors to rotate (state `requested`) or whose old protector must now be removed (`new_escrowed`).", tag: "agent", auth: Auth::Device, params: vec![], request: Some("CheckInBody"),
            responses: vec![ok("200", "rotation instructions", Some("CheckInResponse")), bad_request()] }) }),
        ),
        (
            "/api/v1/agent/rotation",
            json!({ "post": op(Op { summary: "Report rotation progress", description: "Two-phase rotation: after escrowing the new protector report `old_removed: false` (state `new_escrowed`), after Remove-BitLockerKeyProtector report `old_removed: true` (state `done`).", tag: "agent", auth: Auth::Device, params: vec![], request: Some("RotationReport"),
            responses: vec![ok("200", "new rotation state", Some("RotationStateResponse")), bad_request(), err("404", "no such rotation for this device"), err("409", "the new protector has not been escrowed yet")] }) }),
        ),
        (
            "/api/v1/agent/keys",
            json!({ "get": op(Op { summary: "Own keys", description: "The device's own escrowed protectors (no secrets).", tag: "agent", auth: Auth::Device, params: vec![], request: None,
            responses: vec![ok("200", "keys", Some("KeyList"))] }) }),
        ),
        (
            "/api/v1/keys",
            json!({ "get": op(Op { summary: "Find keys", description: "By the first 8 hex digits of the recovery key ID (`prefix`) or by computer name (`device`); exactly one. No secrets. Rate-limited per operator. Roles: admin, helpdesk.", tag: "helpdesk", auth: Auth::Operator,
            params: vec![query("prefix", "first 8 hex digits of the recovery key ID", json!({ "type": "string", "pattern": "^[0-9A-Fa-f]{8}$" })), query("device", "computer name", json!({ "type": "string" }))], request: None,
            responses: vec![ok("200", "candidates", Some("KeyList")), bad_request(), err("429", "rate limit; see Retry-After")] }) }),
        ),
        (
            "/api/v1/keys/{protector_id}/disclose",
            json!({ "post": op(Op { summary: "Disclose a recovery password", description: "Returns the recovery password (and key package) of one protector by its full ID, with a mandatory MBAM reason code. Helpdesk must give the device name. Audited in the same transaction; the key is marked disclosed and queued for rotation. Failed attempts are audited too. Rate-limited per operator.", tag: "helpdesk", auth: Auth::Operator,
            params: vec![path_param("protector_id", "full recovery key ID, e.g. {24B0AA32-F8D0-40BA-BB05-73A800324C09}")], request: Some("DiscloseBody"),
            responses: vec![ok("200", "the secret (Cache-Control: no-store)", Some("Disclosure")), bad_request(), err("404", "no such key, or (helpdesk) the device name does not match"), err("429", "rate limit; see Retry-After")] }) }),
        ),
        (
            "/api/v1/reports/audit",
            json!({ "get": op(Op { summary: "Recovery audit report", description: "Audit records filtered by date range, operator, device and kind; JSON or CSV (`format=csv`). Roles: admin, auditor.", tag: "reports", auth: Auth::Operator,
            params: vec![query("from", "RFC 3339 timestamp or YYYY-MM-DD (UTC)", json!({ "type": "string" })), query("to", "RFC 3339 timestamp or YYYY-MM-DD (inclusive, UTC)", json!({ "type": "string" })), query("operator", "operator name", json!({ "type": "string" })), query("device", "computer name", json!({ "type": "string" })), query("kind", "action, e.g. disclose", json!({ "type": "string" })), query("format", "json (default) or csv", json!({ "type": "string", "enum": ["json", "csv"] }))], request: None,
            responses: vec![(String::from("200"), json!({ "description": "records", "content": { "application/json": { "schema": r("AuditList") }, "text/csv": { "schema": { "type": "string" } } } })), bad_request()] }) }),
        ),
        (
            "/api/v1/reports/fleet",
            json!({ "get": op(Op { summary: "Fleet report", description: "Stale devices, volumes without an escrowed key, disclosed keys not rotated (with age), mismatches. Roles: admin, auditor.", tag: "reports", auth: Auth::Operator,
            params: vec![query("stale_days", "devices not checked in for this many days are stale (default: server setting)", json!({ "type": "integer", "minimum": 1, "maximum": 3650 }))], request: None,
            responses: vec![ok("200", "fleet state", Some("FleetReport")), bad_request()] }) }),
        ),
        (
            "/api/v1/audit/verify",
            json!({ "get": op(Op { summary: "Verify the audit hash chain", description: "Recomputes every record's hash; says where the chain breaks. Roles: admin, auditor.", tag: "reports", auth: Auth::Operator, params: vec![], request: None,
            responses: vec![ok("200", "verdict (status ok or broken)", Some("ChainVerification"))] }) }),
        ),
        (
            "/api/v1/devices",
            json!({ "get": op(Op { summary: "List devices", description: "Roles: admin, auditor.", tag: "devices", auth: Auth::Operator,
            params: vec![query("name", "substring of the computer name", json!({ "type": "string" })), query("include_revoked", "also list revoked devices", json!({ "type": "boolean" })), query("stale_days", "only devices not checked in for this many days", json!({ "type": "integer", "minimum": 0 }))], request: None,
            responses: vec![ok("200", "devices", Some("DeviceList")), bad_request()] }) }),
        ),
        (
            "/api/v1/devices/{id}/revoke",
            json!({ "post": op(Op { summary: "Revoke a device", description: "Its certificate stops working immediately; its keys are kept. Role: admin.", tag: "devices", auth: Auth::Operator,
            params: vec![path_param("id", "device id")], request: None, responses: vec![ok("204", "revoked", None), bad_request(), err("404", "no such device")] }) }),
        ),
        (
            "/api/v1/devices/{id}/allow-reenroll",
            json!({ "post": op(Op { summary: "Allow re-enrollment", description: "The next enrollment of this computer name with a valid token may bind a new certificate (reinstalled server, new TPM). Role: admin.", tag: "devices", auth: Auth::Operator,
            params: vec![path_param("id", "device id")], request: None, responses: vec![ok("204", "allowed", None), bad_request(), err("404", "no such device")] }) }),
        ),
        (
            "/api/v1/enrollment-tokens",
            json!({
                "get": op(Op { summary: "List enrollment tokens", description: "Without secrets. Role: admin.", tag: "devices", auth: Auth::Operator, params: vec![], request: None, responses: vec![ok("200", "tokens", Some("EnrollmentTokenList"))] }),
                "post": op(Op { summary: "Create an enrollment token", description: "Bounded uses and lifetime; the secret is in this answer only. Role: admin.", tag: "devices", auth: Auth::Operator, params: vec![], request: Some("CreateEnrollmentToken"), responses: vec![ok("201", "created", Some("CreatedEnrollmentToken")), bad_request()] }),
            }),
        ),
        (
            "/api/v1/enrollment-tokens/{id}/revoke",
            json!({ "post": op(Op { summary: "Revoke an enrollment token", description: "Role: admin.", tag: "devices", auth: Auth::Operator,
            params: vec![path_param("id", "token id")], request: None, responses: vec![ok("204", "revoked", None), bad_request(), err("404", "no such token")] }) }),
        ),
        (
            "/api/v1/operators",
            json!({
                "get": op(Op { summary: "List operators", description: "Role: admin.", tag: "operators", auth: Auth::Operator, params: vec![], request: None, responses: vec![ok("200", "operators", Some("OperatorList"))] }),
                "post": op(Op { summary: "Create an operator", description: "Role: admin. Create a token for them with POST /tokens.", tag: "operators", auth: Auth::Operator, params: vec![], request: Some("CreateOperator"), responses: vec![ok("201", "created", Some("Operator")), bad_request(), err("409", "name taken")] }),
            }),
        ),
        (
            "/api/v1/operators/{id}/role",
            json!({ "post": op(Op { summary: "Change an operator's role", description: "Role: admin.", tag: "operators", auth: Auth::Operator,
            params: vec![path_param("id", "operator id")], request: Some("SetRole"), responses: vec![ok("204", "changed", None), bad_request(), err("404", "no such operator")] }) }),
        ),
        (
            "/api/v1/operators/{id}/disable",
            json!({ "post": op(Op { summary: "Disable an operator", description: "Their tokens stop working. Role: admin.", tag: "operators", auth: Auth::Operator,
            params: vec![path_param("id", "operator id")], request: None, responses: vec![ok("204", "disabled", None), bad_request(), err("404", "no such operator")] }) }),
        ),
        (
            "/api/v1/tokens",
            json!({ "post": op(Op { summary: "Create an API token", description: "Personal token for an operator; stored only as a hash, the secret is in this answer only. Role: admin.", tag: "operators", auth: Auth::Operator,
            params: vec![], request: Some("CreateApiToken"), responses: vec![ok("201", "created", Some("CreatedApiToken")), bad_request(), err("404", "no such operator")] }) }),
        ),
        (
            "/api/v1/tokens/{id}/revoke",
            json!({ "post": op(Op { summary: "Revoke an API token", description: "Role: admin.", tag: "operators", auth: Auth::Operator,
            params: vec![path_param("id", "token id")], request: None, responses: vec![ok("204", "revoked", None), bad_request(), err("404", "no such token")] }) }),
        ),
    ])
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": props })
}

fn strict(required: &[&str], props: Value) -> Value {
    let mut v = obj(required, props);
    v["additionalProperties"] = json!(false);
    v
}

fn schemas() -> Value {
    let s = json!({ "type": "string" });
    let ns = json!({ "type": ["string", "null"] });
    let ts = json!({ "type": "string", "format": "date-time" });
    let nts = json!({ "type": ["string", "null"], "format": "date-time" });
    let guid = json!({ "type": "string", "description": "GUID, braced or bare, e.g. {24B0AA32-F8D0-40BA-BB05-73A800324C09}" });
    let id = json!({ "type": "integer", "format": "int64" });
    let role = json!({ "type": "string", "enum": ["admin", "helpdesk", "auditor"] });
    let rotation =
        json!({ "type": "string", "enum": ["none", "requested", "new_escrowed", "done"] });
    let vt = json!({ "type": "string", "enum": ["os", "fixed", "removable"] });
    map_of(vec![
        (
            "Error",
            obj(
                &["error"],
                json!({ "error": obj(&["code", "message"], json!({ "code": s, "message": s })) }),
            ),
        ),
        ("Health", obj(&["status"], json!({ "status": s }))),
        (
            "Me",
            obj(
                &["name"],
                json!({ "id": { "type": ["integer", "null"] }, "name": s, "role": { "type": ["string", "null"], "enum": ["admin", "helpdesk", "auditor", null] } }),
            ),
        ),
        (
            "EnrollRequest",
            strict(
                &["token", "computer_name"],
                json!({ "token": s, "computer_name": s, "domain": s, "serial": s }),
            ),
        ),
        (
            "Device",
            obj(
                &[
                    "id",
                    "computer_name",
                    "first_seen",
                    "client_cert_sha256",
                    "revoked",
                    "reenroll_allowed",
                ],
                json!({ "id": id, "computer_name": s, "domain": ns, "serial": ns, "first_seen": ts, "last_check_in": nts, "client_cert_sha256": s, "revoked": { "type": "boolean" }, "reenroll_allowed": { "type": "boolean" } }),
            ),
        ),
        (
            "DeviceList",
            obj(
                &["devices"],
                json!({ "devices": { "type": "array", "items": r("Device") } }),
            ),
        ),
        (
            "EscrowItem",
            strict(
                &[
                    "volume_guid",
                    "volume_type",
                    "protector_id",
                    "recovery_password",
                ],
                json!({ "volume_guid": guid, "mount_point": s, "volume_type": vt, "protector_id": guid,
            "recovery_password": { "type": "string", "description": "48 digits: 8 groups of 6, hyphen or space separated; each group divisible by 11 and <= 720885" },
            "key_package": { "type": "string", "contentEncoding": "base64" } }),
            ),
        ),
        (
            "EscrowBody",
            strict(
                &["items"],
                json!({ "items": { "type": "array", "minItems": 1, "maxItems": 256, "items": r("EscrowItem") }, "tpm_owner_auth": s }),
            ),
        ),
        (
            "EscrowItemResult",
            obj(
                &["volume_guid", "protector_id", "outcome"],
                json!({ "volume_guid": s, "protector_id": s, "outcome": { "type": "string", "enum": ["stored", "unchanged", "mismatch"] } }),
            ),
        ),
        (
            "EscrowResponse",
            obj(
                &["results"],
                json!({ "results": { "type": "array", "items": r("EscrowItemResult") } }),
            ),
        ),
        (
            "EscrowConflict",
            obj(
                &["error", "results"],
                json!({ "error": obj(&["code", "message"], json!({ "code": s, "message": s })), "results": { "type": "array", "items": r("EscrowItemResult") } }),
            ),
        ),
        (
            "PresentProtector",
            strict(
                &["volume_guid", "protector_id"],
                json!({ "volume_guid": guid, "protector_id": guid }),
            ),
        ),
        (
            "CheckInBody",
            strict(
                &["protectors"],
                json!({
                    "protectors": { "type": "array", "items": r("PresentProtector") },
                    "adapters": {
                        "type": "array", "maxItems": 64,
                        "description": "MAC addresses of the device's network adapters (AA-BB-CC-DD-EE-FF or aa:bb:cc:dd:ee:ff); they join Network Unlock requests to the device. Absent: the last reported list is kept.",
                        "items": { "type": "string", "pattern": "^([0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{12})$" }
                    }
                }),
            ),
        ),
        (
            "RotationInstruction",
            obj(
                &["volume_guid", "protector_id", "state", "requested_at"],
                json!({ "volume_guid": s, "protector_id": s, "state": rotation, "requested_at": ts }),
            ),
        ),
        (
            "CheckInResponse",
            obj(
                &["rotations"],
                json!({ "rotations": { "type": "array", "items": r("RotationInstruction") } }),
            ),
        ),
        (
            "RotationReport",
            strict(
                &["old_protector_id", "new_protector_id", "old_removed"],
                json!({ "old_protector_id": guid, "new_protector_id": guid, "old_removed": { "type": "boolean" } }),
            ),
        ),
        (
            "RotationStateResponse",
            obj(&["state"], json!({ "state": rotation })),
        ),
        (
            "Key",
            obj(
                &[
                    "device_id",
                    "device_name",
                    "volume_guid",
                    "volume_type",
                    "protector_id",
                    "escrowed_at",
                    "rotation",
                ],
                json!({ "device_id": id, "device_name": s, "domain": ns, "volume_guid": s, "volume_type": vt, "mount_point": ns, "protector_id": s, "escrowed_at": ts, "superseded_at": nts, "disclosed_at": nts, "rotation": rotation }),
            ),
        ),
        (
            "KeyList",
            obj(
                &["keys"],
                json!({ "keys": { "type": "array", "items": r("Key") } }),
            ),
        ),
        (
            "DiscloseBody",
            strict(
                &["reason"],
                json!({ "device_name": { "type": "string", "description": "required for helpdesk; must match the key's device" },
            "reason": { "type": "string", "enum": ["boot_order_changed", "bios_changed", "os_files_modified", "lost_startup_key", "lost_pin", "tpm_reset", "lost_passphrase", "lost_smartcard", "other"] },
            "reason_text": { "type": "string", "description": "required when reason is other" } }),
            ),
        ),
        (
            "Disclosure",
            obj(
                &["key", "recovery_password", "audit_seq"],
                json!({ "key": r("Key"), "recovery_password": s, "key_package": { "type": ["string", "null"], "contentEncoding": "base64" }, "audit_seq": id }),
            ),
        ),
        (
            "CreateEnrollmentToken",
            strict(
                &["max_uses", "ttl_seconds"],
                json!({ "max_uses": { "type": "integer", "minimum": 1, "maximum": 100000 }, "ttl_seconds": { "type": "integer", "minimum": 1, "maximum": 2592000 }, "note": s }),
            ),
        ),
        (
            "EnrollmentToken",
            obj(
                &[
                    "id",
                    "max_uses",
                    "uses",
                    "created_at",
                    "expires_at",
                    "revoked",
                ],
                json!({ "id": id, "note": ns, "max_uses": { "type": "integer" }, "uses": { "type": "integer" }, "created_at": ts, "expires_at": ts, "revoked": { "type": "boolean" } }),
            ),
        ),
        (
            "CreatedEnrollmentToken",
            obj(
                &["info", "token"],
                json!({ "info": r("EnrollmentToken"), "token": { "type": "string", "description": "secret, shown once" } }),
            ),
        ),
        (
            "EnrollmentTokenList",
            obj(
                &["tokens"],
                json!({ "tokens": { "type": "array", "items": r("EnrollmentToken") } }),
            ),
        ),
        (
            "CreateOperator",
            strict(&["name", "role"], json!({ "name": s, "role": role })),
        ),
        (
            "Operator",
            obj(
                &["id", "name", "role", "disabled", "created_at"],
                json!({ "id": id, "name": s, "role": role, "disabled": { "type": "boolean" }, "created_at": ts }),
            ),
        ),
        (
            "OperatorList",
            obj(
                &["operators"],
                json!({ "operators": { "type": "array", "items": r("Operator") } }),
            ),
        ),
        ("SetRole", strict(&["role"], json!({ "role": role }))),
        (
            "CreateApiToken",
            strict(
                &["operator_id"],
                json!({ "operator_id": id, "ttl_seconds": { "type": "integer", "minimum": 60 } }),
            ),
        ),
        (
            "ApiToken",
            obj(
                &["id", "operator_id", "created_at", "revoked"],
                json!({ "id": id, "operator_id": id, "created_at": ts, "expires_at": nts, "revoked": { "type": "boolean" } }),
            ),
        ),
        (
            "CreatedApiToken",
            obj(
                &["info", "token"],
                json!({ "info": r("ApiToken"), "token": { "type": "string", "description": "secret, shown once" } }),
            ),
        ),
        (
            "AuditRecord",
            obj(
                &[
                    "seq",
                    "at",
                    "actor_kind",
                    "actor_name",
                    "action",
                    "outcome",
                    "detail",
                    "prev_hash",
                    "hash",
                ],
                json!({ "seq": id, "at": ts, "actor_kind": { "type": "string", "enum": ["operator", "device", "local"] }, "actor_id": { "type": ["integer", "null"] }, "actor_name": s, "action": s, "device_id": { "type": ["integer", "null"] }, "device_name": ns, "protector_id": ns, "reason": ns, "outcome": { "type": "string", "enum": ["success", "failure"] }, "client_addr": ns, "detail": { "type": "string", "description": "JSON text as hashed" }, "prev_hash": s, "hash": s }),
            ),
        ),
        (
            "AuditList",
            obj(
                &["records"],
                json!({ "records": { "type": "array", "items": r("AuditRecord") } }),
            ),
        ),
        (
            "FleetReport",
            json!({ "type": "object", "description": "stale devices, volumes without key, disclosed-not-rotated keys with age, mismatches" }),
        ),
        (
            "ChainVerification",
            json!({ "oneOf": [
            obj(&["status", "records", "head_hash"], json!({ "status": { "const": "ok" }, "records": { "type": "integer" }, "head_hash": s })),
            obj(&["status", "seq", "reason"], json!({ "status": { "const": "broken" }, "seq": id, "reason": s })),
        ] }),
        ),
    ])
}

/// The document as a JSON value.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "netunlockd escrow API",
            "version": "1",
            "description": "BitLocker recovery-key escrow. Agents authenticate with the client certificate bound at enrollment (mutual TLS); operators with personal bearer tokens (roles admin, helpdesk, auditor). Every error body is {\"error\": {\"code\", \"message\"}}.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "servers": [{ "url": "https://{host}:{port}", "variables": { "host": { "default": "escrow.example" }, "port": { "default": "8443" } } }],
        "tags": [
            { "name": "agent" }, { "name": "helpdesk" }, { "name": "reports" },
            { "name": "devices" }, { "name": "operators" }, { "name": "meta" },
        ],
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearerToken": { "type": "http", "scheme": "bearer", "description": "personal operator API token" },
                "deviceCertificate": { "type": "mutualTLS", "description": "the client certificate bound at enrollment" },
            },
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = crate::api::ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_string(), (*p).to_string()))
            .collect();
        assert_eq!(documented, served);
    }

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
    fn docs_copy_matches_the_served_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, document_json()).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == document_json(),
            "docs/openapi.json differs from the served document; run UPDATE_OPENAPI=1 cargo test -p escrow openapi"
        );
    }
}
