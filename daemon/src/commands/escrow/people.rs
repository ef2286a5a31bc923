//! The people form of the escrow commands' answers: aligned tables and short sentences. Scripts
//! use `--output json`, which prints the API's own documents instead.

use anyhow::Result;
use escrow::web::counted_title;
use escrow::wire;

use crate::output::{self, Table, when, when_opt, yes_no};

pub(super) fn operators(list: &wire::OperatorList) -> Result<()> {
    let mut t = Table::new(&["ID", "NAME", "ROLE", "DISABLED", "CREATED"]);
    for o in &list.operators {
        t.row(vec![
            o.id.to_string(),
            o.name.clone(),
            o.role.to_string(),
            yes_no(o.disabled),
            when(o.created_at),
        ]);
    }
    t.print("no operators")
}

pub(super) fn operator_created(o: &wire::OperatorView) -> Result<()> {
    output::line(format_args!(
        "created operator {} (id {}, role {}); give them a token with `netunlockd operator token {}`",
        o.name, o.id, o.role, o.id
    ))
}

pub(super) fn api_token_created(t: &wire::CreatedApiToken) -> Result<()> {
    let expiry = t.info.expires_at.map_or_else(
        || "never expires".to_owned(),
        |e| format!("expires {}", when(e)),
    );
    output::line(format_args!(
        "API token {} for operator {} ({expiry}); store it now, it is not shown again:",
        t.info.id, t.info.operator_id
    ))?;
    output::line(&t.token)
}

pub(super) fn enrollment_token_created(t: &wire::CreatedEnrollmentToken) -> Result<()> {
    output::line(format_args!(
        "enrollment token {} for {} device(s), expires {}; give it to the agent now, it is not shown again:",
        t.info.id,
        t.info.max_uses,
        when(t.info.expires_at)
    ))?;
    output::line(&t.token)
}

pub(super) fn api_tokens(list: &wire::ApiTokenList) -> Result<()> {
    let mut t = Table::new(&["ID", "OPERATOR", "CREATED", "EXPIRES", "REVOKED"]);
    for k in &list.tokens {
        t.row(vec![
            k.id.to_string(),
            k.operator_id.to_string(),
            when(k.created_at),
            when_opt(k.expires_at),
            yes_no(k.revoked),
        ]);
    }
    t.print("no API tokens")
}

pub(super) fn enrollment_tokens(list: &wire::EnrollmentTokenList) -> Result<()> {
    let mut t = Table::new(&["ID", "USES", "EXPIRES", "REVOKED", "NOTE"]);
    for e in &list.tokens {
        t.row(vec![
            e.id.to_string(),
            format!("{}/{}", e.uses, e.max_uses),
            when(e.expires_at),
            yes_no(e.revoked),
            e.note.clone().unwrap_or_default(),
        ]);
    }
    t.print("no enrollment tokens")
}

pub(super) fn keys(list: &wire::KeyList) -> Result<()> {
    let mut t = Table::new(&["DEVICE", "VOLUME", "MOUNT", "KEY ID", "ESCROWED", "STATE"]);
    for k in &list.keys {
        let state = if k.superseded_at.is_some() {
            "superseded".to_owned()
        } else if k.disclosed_at.is_some() {
            format!("disclosed, rotation {}", k.rotation)
        } else {
            "current".to_owned()
        };
        t.row(vec![
            k.device_name.clone(),
            k.volume_type.to_string(),
            k.mount_point.clone().unwrap_or_default(),
            k.protector_id.to_string(),
            when(k.escrowed_at),
            state,
        ]);
    }
    t.print("no matching recovery key")
}

pub(super) fn disclosure(d: &wire::DisclosureResponse) -> Result<()> {
    let k = &d.key;
    output::line(format_args!("device:            {}", k.device_name))?;
    output::line(format_args!(
        "volume:            {} {}",
        k.volume_type,
        k.mount_point.as_deref().unwrap_or("")
    ))?;
    output::line(format_args!("recovery key ID:   {}", k.protector_id))?;
    output::line(format_args!("recovery password: {}", d.recovery_password))?;
    output::line("")?;
    output::line(output::grouped_recovery_password(&d.recovery_password))?;
    output::line("")?;
    output::line(format_args!(
        "audited as record {}; the agent rotates this key at its next check-in",
        d.audit_seq
    ))
}

pub(super) fn devices(list: &wire::DeviceList) -> Result<()> {
    let mut t = Table::new(&["ID", "NAME", "DOMAIN", "LAST CHECK-IN", "STATE"]);
    for d in &list.devices {
        let state = if d.revoked {
            "revoked"
        } else if d.reenroll_allowed {
            "may re-enroll"
        } else {
            "enrolled"
        };
        t.row(vec![
            d.id.to_string(),
            d.computer_name.clone(),
            d.domain.clone().unwrap_or_default(),
            when_opt(d.last_check_in),
            state.to_owned(),
        ]);
    }
    t.print("no devices")
}

pub(super) fn audit_records(list: &wire::AuditList) -> Result<()> {
    let mut t = Table::new(&[
        "SEQ", "AT", "ACTOR", "ACTION", "DEVICE", "REASON", "OUTCOME",
    ]);
    for r in &list.records {
        t.row(vec![
            r.seq.to_string(),
            when(r.at),
            r.actor_name.clone(),
            r.action.clone(),
            r.device_name.clone().unwrap_or_default(),
            r.reason.clone().unwrap_or_default(),
            r.outcome.to_string(),
        ]);
    }
    t.print("no audit records")
}

pub(super) fn fleet(f: &wire::FleetView) -> Result<()> {
    output::line(format_args!(
        "fleet report {} (stale after {} day(s))",
        when(f.generated_at),
        f.stale_after_secs / 86_400
    ))?;
    output::line("")?;
    let mut stale = Table::new(&["DEVICE ID", "NAME", "DOMAIN", "LAST CHECK-IN"]);
    for d in &f.stale_devices {
        stale.row(vec![
            d.device_id.to_string(),
            d.computer_name.clone(),
            d.domain.clone().unwrap_or_default(),
            when_opt(d.last_check_in),
        ]);
    }
    section("Stale devices", &stale)?;
    let mut missing = Table::new(&["DEVICE ID", "NAME", "VOLUME", "TYPE", "MOUNT"]);
    for v in &f.volumes_without_key {
        missing.row(vec![
            v.device_id.to_string(),
            v.computer_name.clone(),
            v.volume_guid.to_string(),
            v.volume_type.to_string(),
            v.mount_point.clone().unwrap_or_default(),
        ]);
    }
    section("Volumes without an escrowed key", &missing)?;
    let mut pending = Table::new(&["DEVICE", "KEY ID", "DISCLOSED", "ROTATION"]);
    for d in &f.disclosed_not_rotated {
        pending.row(vec![
            d.key.device_name.clone(),
            d.key.protector_id.to_string(),
            when_opt(d.key.disclosed_at),
            d.key.rotation.to_string(),
        ]);
    }
    section("Disclosed and not yet rotated", &pending)?;
    let mut mismatches = Table::new(&["DEVICE ID", "NAME", "KEY ID", "DETECTED", "AUDIT SEQ"]);
    for m in &f.mismatches {
        mismatches.row(vec![
            m.device_id.to_string(),
            m.computer_name.clone(),
            m.protector_id.to_string(),
            when(m.detected_at),
            m.audit_seq.to_string(),
        ]);
    }
    section("Escrow mismatches", &mismatches)
}

pub(super) fn unlocks(r: &wire::UnlockFleetReport) -> Result<()> {
    output::line(format_args!(
        "Network Unlock report {} (window {} day(s))",
        when(r.generated_at),
        r.window_days
    ))?;
    output::line("")?;
    let mut devices = Table::new(&["DEVICE ID", "NAME", "DOMAIN", "LAST NETWORK UNLOCK"]);
    for d in &r.devices_without_unlock {
        devices.row(vec![
            d.device_id.to_string(),
            d.computer_name.clone(),
            d.domain.clone().unwrap_or_default(),
            when_opt(d.last_unlock),
        ]);
    }
    section(
        &counted_title(
            "Enrolled devices with no Network Unlock in the window",
            r.devices_without_unlock.len(),
            r.devices_without_unlock_total,
        ),
        &devices,
    )?;
    let mut adapters = Table::new(&["MAC", "REQUESTS", "LAST SEEN", "LAST OUTCOME"]);
    for a in &r.unknown_adapters {
        adapters.row(vec![
            a.mac.to_string(),
            a.requests.to_string(),
            when(a.last_seen),
            a.last_outcome.clone(),
        ]);
    }
    section(
        &counted_title(
            "Requests from adapters no enrolled device reports",
            r.unknown_adapters.len(),
            r.unknown_adapters_total,
        ),
        &adapters,
    )
}

fn section(title: &str, table: &Table) -> Result<()> {
    output::line(format_args!("{title}:"))?;
    if table.is_empty() {
        output::line("  none")?;
    } else {
        for l in table.render().lines() {
            output::line(format_args!("  {l}"))?;
        }
    }
    output::line("")
}
