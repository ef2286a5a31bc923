//! The Windows agent's contract, checked from the server side. `tests/agent-fixtures/` holds the
//! exact JSON bodies `agent/netunlockd-agent.ps1` builds for a set of inventories (the Pester
//! tests in `agent/tests/` assert the agent produces them byte for byte). Here they are checked
//! against the OpenAPI document (`docs/openapi.json`), against the inventories they come from
//! (every readable protector escrowed once, within the limits), and sent to the real daemon over
//! mutual TLS with an ECDSA P-256 client certificate, as the agent does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use crate::escrow_support::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent-fixtures")
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read_text(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The schemas of `docs/openapi.json`, each validated with the whole `components` section in
/// reach so `$ref`s resolve.
struct OpenApi {
    components: Value,
}

impl OpenApi {
    fn load() -> Self {
        let doc = read_json(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json"));
        Self {
            components: doc["components"].clone(),
        }
    }

    fn check(&self, schema: &str, instance: &Value) -> Result<(), String> {
        assert!(
            self.components["schemas"].get(schema).is_some(),
            "docs/openapi.json has no schema {schema}"
        );
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("#/components/schemas/{schema}"),
            "components": self.components,
        });
        let validator = jsonschema::validator_for(&root).map_err(|e| e.to_string())?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn assert_valid(&self, schema: &str, instance: &Value, what: &str) {
        if let Err(e) = self.check(schema, instance) {
            panic!("{what} does not match the OpenAPI schema {schema}: {e}");
        }
    }
}

/// Which OpenAPI schema each fixture file is, by name. Inputs of the Pester tests (inventories,
/// facts, the added protector) are not bodies.
fn schema_of(file: &str) -> Option<&'static str> {
    match file {
        "inventory.json" | "facts.json" | "new-protector.json" => None,
        "enroll.json" => Some("EnrollRequest"),
        "checkin-response.json" => Some("CheckInResponse"),
        f if f.starts_with("escrow-") => Some("EscrowBody"),
        f if f.starts_with("checkin-") => Some("CheckInBody"),
        f if f.starts_with("report-") => Some("RotationReport"),
        other => panic!("tests/agent-fixtures: no schema known for {other}; name it by its route"),
    }
}

/// The inventory cases, in a fixed order.
fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("inventory.json").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 5,
        "expected the inventory cases, found {dirs:?}"
    );
    dirs
}

/// `prefix-1.json`, `prefix-2.json`, … of a case, in order.
fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (1..)
        .map(|i| dir.join(format!("{prefix}-{i}.json")))
        .take_while(|p| p.exists())
        .collect()
}

fn guid_key(s: &str) -> String {
    s.trim_matches(|c| c == '{' || c == '}')
        .to_ascii_uppercase()
}

#[test]
fn every_fixture_body_matches_the_openapi_document() {
    let api = OpenApi::load();
    let mut checked = 0;
    let mut stack = vec![fixtures()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            if !name.ends_with(".json") {
                continue;
            }
            if let Some(schema) = schema_of(&name) {
                api.assert_valid(schema, &read_json(&path), &path.display().to_string());
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} fixture bodies found");

    // The validator does refuse what the server refuses (so this test can fail).
    let mut bad = read_json(&fixtures().join("several-volumes/escrow-1.json"));
    bad["items"][0]["recovery_pasword"] = json!("typo");
    assert!(api.check("EscrowBody", &bad).is_err());
    assert!(api.check("EscrowBody", &json!({"items": []})).is_err());
    assert!(
        api.check("RotationReport", &json!({"old_protector_id": "x"}))
            .is_err()
    );
}

/// What the inventory says must be escrowed and reported, against the bodies: every protector
/// whose password is readable is escrowed exactly once; nothing else is; each call stays within
/// the limits the case names; the check-in lists every protector of every volume.
#[test]
fn escrow_bodies_follow_from_their_inventory_within_the_limits() {
    for dir in cases() {
        let case = dir.display().to_string();
        let inv = read_json(&dir.join("inventory.json"));
        let limits = &inv["limits"];
        let max_items = limits["max_items_per_call"].as_u64().unwrap() as usize;
        let max_body = limits["max_body_bytes"].as_u64().unwrap() as usize;
        let max_package = limits["max_key_package_bytes"].as_u64().unwrap() as usize;
        let problems: BTreeSet<String> = inv["expected_problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| guid_key(v.as_str().unwrap()))
            .collect();

        let mut readable = BTreeMap::new();
        let mut present = BTreeSet::new();
        for volume in inv["volumes"].as_array().unwrap() {
            for p in volume["protectors"].as_array().unwrap() {
                let id = guid_key(p["id"].as_str().unwrap());
                present.insert(id.clone());
                if let Some(pw) = p["password"].as_str() {
                    readable.insert(id, pw.to_string());
                }
            }
        }

        let mut escrowed = BTreeMap::new();
        for file in numbered(&dir, "escrow") {
            let text = read_text(&file);
            assert!(
                text.len() <= max_body,
                "{}: {} bytes, over the body limit {max_body}",
                file.display(),
                text.len()
            );
            let body: Value = serde_json::from_str(&text).unwrap();
            let items = body["items"].as_array().unwrap();
            assert!(
                !items.is_empty() && items.len() <= max_items,
                "{}: {} items",
                file.display(),
                items.len()
            );
            for item in items {
                let id = guid_key(item["protector_id"].as_str().unwrap());
                if let Some(kp) = item["key_package"].as_str() {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(kp)
                        .unwrap();
                    assert!(
                        !bytes.is_empty() && bytes.len() <= max_package,
                        "{case}: {id}"
                    );
                }
                let pw = item["recovery_password"].as_str().unwrap().to_string();
                assert!(
                    escrowed.insert(id.clone(), pw).is_none(),
                    "{case}: {id} escrowed twice"
                );
            }
        }
        assert_eq!(
            escrowed, readable,
            "{case}: escrowed protectors != readable ones"
        );
        for id in &problems {
            assert!(present.contains(id), "{case}: unknown problem {id}");
        }

        let reported: BTreeSet<String> = numbered(&dir, "checkin")
            .iter()
            .flat_map(|f| {
                read_json(f)["protectors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| guid_key(p["protector_id"].as_str().unwrap()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(reported, present, "{case}: check-in");
    }
}

/// POSTs a fixture body as the agent does; returns the status and the parsed answer.
async fn post(agent: &Agent, path: &str, body: &str) -> (u16, Value) {
    let (status, bytes) = agent
        .client
        .request_raw(
            Method::POST,
            path,
            Some(("application/json", body.as_bytes().to_vec())),
        )
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

fn outcomes(answer: &Value) -> Vec<(String, String)> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                guid_key(r["protector_id"].as_str().unwrap()),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn ids_of(body: &str) -> Vec<String> {
    serde_json::from_str::<Value>(body).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| guid_key(i["protector_id"].as_str().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_accepts_every_fixture_body_and_rotates_as_the_agent_expects() {
    let api = OpenApi::load();
    let d = EscrowDaemon::start(&Backend::Sqlite).await;
    let admin = d.admin().await;
    let agent = d.agent("SRV-DB-01");

    // Enrollment: the fixture body with a real token in place of the placeholder.
    let mut enroll = read_json(&fixtures().join("enroll/enroll.json"));
    enroll["token"] = json!(enrollment_token(&admin, 1).await);
    let (status, device) = post(&agent, "enroll", &enroll.to_string()).await;
    assert_eq!(status, 201, "{device}");
    api.assert_valid("Device", &device, "the enrollment answer");
    assert_eq!(device["computer_name"], "SRV-DB-01");
    assert_eq!(device["client_cert_sha256"], json!(agent.cert_sha256));

    let mut passwords = Vec::new();
    for dir in cases() {
        let case = dir.display().to_string();
        let escrows = numbered(&dir, "escrow");
        for file in &escrows {
            let body = read_text(file);
            passwords.extend(
                read_json(file)["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["recovery_password"].as_str().unwrap().to_string()),
            );
            let (status, answer) = post(&agent, "agent/escrow", &body).await;
            assert_eq!(status, 200, "{}: {answer}", file.display());
            api.assert_valid("EscrowResponse", &answer, &file.display().to_string());
            let got = outcomes(&answer);
            assert_eq!(
                got.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
                ids_of(&body),
                "{}",
                file.display()
            );
            assert!(
                got.iter().all(|(_, o)| o == "stored"),
                "{}: {got:?}",
                file.display()
            );
        }
        // The agent escrows everything on every run: the second run is all "unchanged".
        if let Some(first) = escrows.first() {
            let (status, answer) = post(&agent, "agent/escrow", &read_text(first)).await;
            assert_eq!(status, 200, "{case}: {answer}");
            assert!(
                outcomes(&answer).iter().all(|(_, o)| o == "unchanged"),
                "{case}: {answer}"
            );
        }
        for file in numbered(&dir, "checkin") {
            let (status, answer) = post(&agent, "agent/checkin", &read_text(&file)).await;
            assert_eq!(status, 200, "{}: {answer}", file.display());
            api.assert_valid("CheckInResponse", &answer, &file.display().to_string());
            assert_eq!(answer["rotations"], json!([]), "{}", file.display());
        }
    }

    // Rotation of the first OS protector of "several-volumes", as rotation/ describes it.
    let rot = fixtures().join("rotation");
    let expected = read_json(&rot.join("checkin-response.json"));
    let old = expected["rotations"][0]["protector_id"]
        .as_str()
        .unwrap()
        .to_string();
    let disclose = format!(
        "keys/{}/disclose",
        old.replace('{', "%7B").replace('}', "%7D")
    );
    let (status, bytes) = admin
        .request_raw(
            Method::POST,
            &disclose,
            Some((
                "application/json",
                br#"{"device_name":"SRV-DB-01","reason":"lost_pin"}"#.to_vec(),
            )),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));

    let checkin = read_text(&fixtures().join("several-volumes/checkin-1.json"));
    let (status, answer) = post(&agent, "agent/checkin", &checkin).await;
    assert_eq!(status, 200, "{answer}");
    api.assert_valid("CheckInResponse", &answer, "the check-in answer");
    let rotations = answer["rotations"].as_array().unwrap();
    assert_eq!(rotations.len(), 1, "{answer}");
    let (real, fixture) = (&rotations[0], &expected["rotations"][0]);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(real),
        keys(fixture),
        "the fixture answer has the real fields"
    );
    for field in ["protector_id", "volume_guid"] {
        assert_eq!(
            guid_key(real[field].as_str().unwrap()),
            guid_key(fixture[field].as_str().unwrap()),
            "{field}"
        );
    }
    assert_eq!(real["state"], fixture["state"]);

    // The agent escrows the new protector, then reports the two phases.
    let (status, answer) = post(
        &agent,
        "agent/escrow",
        &read_text(&rot.join("escrow-new.json")),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(outcomes(&answer)[0].1, "stored");
    for (file, state) in [
        ("report-new-escrowed.json", "new_escrowed"),
        ("report-done.json", "done"),
    ] {
        let (status, answer) = post(&agent, "agent/rotation", &read_text(&rot.join(file))).await;
        assert_eq!(status, 200, "{file}: {answer}");
        api.assert_valid("RotationStateResponse", &answer, file);
        assert_eq!(answer["state"], state, "{file}");
    }

    let log = d.log_text();
    for pw in passwords {
        assert!(
            !log.contains(&pw),
            "a recovery password reached the daemon log"
        );
    }
}
