//! Issue 8 item 4, against the real daemon: one set of limits (64 protectors per call, as the
//! OpenAPI document says), one GUID form in answers (braced upper case), and `Connection: close`
//! on answers the server gives without reading the request body (401, 413, 415).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use escrow::wire;
use reqwest::Method;

use crate::escrow_support::*;

fn items(n: u64) -> Vec<wire::EscrowItemBody> {
    let vol = guid();
    (0..n)
        .map(|i| item(&vol, &guid(), &recovery_password(1000 + i)))
        .collect()
}

async fn limits_and_guid_form(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    let agent = d.agent("SRV-CONTRACT-01");
    agent.enroll(&enrollment_token(&admin, 1).await).await;

    // The documented number is the enforced one.
    let doc: serde_json::Value = serde_json::from_str(escrow::openapi::document_json()).unwrap();
    let max = doc["components"]["schemas"]["EscrowBody"]["properties"]["items"]["maxItems"]
        .as_u64()
        .expect("EscrowBody.items has maxItems");
    assert_eq!(max, 64);
    let over = serde_json::to_vec(&wire::EscrowBody {
        items: items(max + 1),
        tpm_owner_auth: None,
    })
    .unwrap();
    let (s, b) = agent
        .client
        .request_raw(
            Method::POST,
            "agent/escrow",
            Some(("application/json", over)),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&b);
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("at most 64"), "{text}");
    let at = wire::EscrowBody {
        items: items(max),
        tpm_owner_auth: None,
    };
    let res = agent.client.escrow(&at).await.unwrap();
    assert_eq!(res.results.len(), 64);

    // Every GUID in answers is braced upper case, whatever form the agent sent.
    let braced = |s: &str| {
        s.len() == 38
            && s.starts_with('{')
            && s.ends_with('}')
            && !s.bytes().any(|c| c.is_ascii_lowercase())
    };
    let lower_vol = guid().trim_matches(['{', '}']).to_ascii_lowercase();
    let lower_pid = guid().trim_matches(['{', '}']).to_ascii_lowercase();
    let res = agent
        .client
        .escrow(&wire::EscrowBody {
            items: vec![item(&lower_vol, &lower_pid, &recovery_password(7))],
            tpm_owner_auth: None,
        })
        .await
        .unwrap();
    assert!(braced(&res.results[0].volume_guid), "{res:?}");
    assert!(braced(&res.results[0].protector_id), "{res:?}");
    let (s, own) = agent
        .client
        .request_raw(Method::GET, "agent/keys", None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    let own: serde_json::Value = serde_json::from_slice(&own).unwrap();
    for k in own["keys"].as_array().unwrap() {
        for field in ["volume_guid", "protector_id"] {
            let v = k[field].as_str().unwrap();
            assert!(braced(v), "{field} {v:?} is not braced upper case");
        }
    }
    let (s, found) = admin
        .request_raw(
            Method::GET,
            &format!("keys?prefix={}", &lower_pid[..8]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 200);
    let found: serde_json::Value = serde_json::from_slice(&found).unwrap();
    let v = found["keys"][0]["volume_guid"].as_str().unwrap();
    assert_eq!(v, format!("{{{}}}", lower_vol.to_ascii_uppercase()));
}
both_backends!(one_limit_set_and_one_guid_form, super::limits_and_guid_form);

async fn connection_close_without_body_read(backend: Backend) {
    let d = EscrowDaemon::start(&backend).await;
    let admin = d.admin().await;
    let anonymous = d.anonymous();
    let closes = |h: &reqwest::header::HeaderMap| {
        h.get(reqwest::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    };
    // 401: the token check answers before the body is read.
    let (s, h, _) = anonymous
        .request_raw_with_headers(
            Method::POST,
            "operators",
            Some((
                "application/json",
                b"{\"name\":\"x\",\"role\":\"auditor\"}".to_vec(),
            )),
        )
        .await
        .unwrap();
    assert_eq!(s, 401);
    assert!(closes(&h), "401 without Connection: close: {h:?}");
    // 413: larger than max_body_bytes (65536 in the test configuration).
    let (s, h, _) = admin
        .request_raw_with_headers(
            Method::POST,
            "operators",
            Some(("application/json", vec![b' '; 70_000])),
        )
        .await
        .unwrap();
    assert_eq!(s, 413);
    assert!(closes(&h), "413 without Connection: close: {h:?}");
    // 415: wrong content type, body unread.
    let (s, h, _) = admin
        .request_raw_with_headers(
            Method::POST,
            "operators",
            Some(("text/plain", b"{}".to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(s, 415);
    assert!(closes(&h), "415 without Connection: close: {h:?}");
    // An ordinary answer keeps the connection.
    let (s, h, _) = admin
        .request_raw_with_headers(Method::GET, "me", None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert!(!closes(&h), "{h:?}");
}
both_backends!(
    connection_close_when_the_body_is_not_read,
    super::connection_close_without_body_read
);
