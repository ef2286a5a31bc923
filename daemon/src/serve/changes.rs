//! What a reload changed, and which changed settings only a restart applies. Pure, so the
//! operator-facing lines are table-tested.

use std::collections::BTreeMap;

use netunlock::{CertificatePolicy, WdsPolicy};

use crate::config::Config;
use crate::keys::{LoadedCertificate, LoadedKeys};

/// One line per change in the certificates, their effective policy, and the subnet policy file.
pub(super) fn key_changes(old: &LoadedKeys, new: &LoadedKeys) -> Vec<String> {
    let by_thumbprint = |set: &[LoadedCertificate]| -> BTreeMap<String, LoadedCertificate> {
        set.iter()
            .map(|c| (c.thumbprint_hex.clone(), c.clone()))
            .collect()
    };
    let mut out = keyed_changes(
        &by_thumbprint(&old.certificates),
        &by_thumbprint(&new.certificates),
        |t, c| {
            format!(
                "certificate added: {t} ({}, {})",
                c.subject,
                c.source.display()
            )
        },
        |t, b, c| {
            let mut lines = Vec::new();
            if b.enabled != c.enabled {
                let state = if c.enabled { "enabled" } else { "disabled" };
                lines.push(format!("certificate {t} {state}"));
            }
            if b.allowed_subnets != c.allowed_subnets {
                lines.push(format!(
                    "certificate {t} allowed subnets: {} -> {}",
                    subnets(&b.allowed_subnets),
                    subnets(&c.allowed_subnets)
                ));
            }
            if b.source != c.source {
                lines.push(format!(
                    "certificate {t} now loaded from {}",
                    c.source.display()
                ));
            }
            lines
        },
        |t, c| format!("certificate removed: {t} ({})", c.subject),
    );
    out.extend(policy_file_changes(
        old.policy_file.as_ref(),
        new.policy_file.as_ref(),
    ));
    out
}

/// The lines for a keyed set that changed: `added` for each new key, `changed` for each kept one
/// (it says what differs, if anything), then `removed` for each key that went.
fn keyed_changes<V>(
    before: &BTreeMap<String, V>,
    after: &BTreeMap<String, V>,
    added: impl Fn(&str, &V) -> String,
    changed: impl Fn(&str, &V, &V) -> Vec<String>,
    removed: impl Fn(&str, &V) -> String,
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, new) in after {
        match before.get(key) {
            None => out.push(added(key, new)),
            Some(old) => out.extend(changed(key, old, new)),
        }
    }
    for (key, old) in before {
        if !after.contains_key(key) {
            out.push(removed(key, old));
        }
    }
    out
}

fn subnets(list: &[String]) -> String {
    if list.is_empty() {
        "all".into()
    } else {
        list.join(" ")
    }
}

fn policy_file_changes(old: Option<&WdsPolicy>, new: Option<&WdsPolicy>) -> Vec<String> {
    let empty = WdsPolicy::default();
    let mut out = Vec::new();
    match (old, new) {
        (None, None) => return out,
        (None, Some(_)) => out.push("subnet policy file now applied".into()),
        (Some(_), None) => out.push("subnet policy file no longer applied".into()),
        (Some(_), Some(_)) => {}
    }
    let old = old.unwrap_or(&empty);
    let new = new.unwrap_or(&empty);

    let named = |p: &WdsPolicy| -> BTreeMap<String, String> {
        p.subnets()
            .iter()
            .map(|(n, net)| (n.to_ascii_uppercase(), format!("{n} = {net}")))
            .collect()
    };
    out.extend(keyed_changes(
        &named(old),
        &named(new),
        |_, line| format!("policy subnet added: {line}"),
        |_, b, line| {
            (b != line)
                .then(|| format!("policy subnet changed: {b} -> {line}"))
                .into_iter()
                .collect()
        },
        |_, line| format!("policy subnet removed: {line}"),
    ));

    let sections = |p: &WdsPolicy| -> BTreeMap<String, CertificatePolicy> {
        p.certificates()
            .map(|(t, policy)| (hex::encode(t), policy.clone()))
            .collect()
    };
    out.extend(keyed_changes(
        &sections(old),
        &sections(new),
        |t, policy| format!("policy section added: [{t}] {}", describe(policy)),
        |t, b, policy| {
            (b != policy)
                .then(|| {
                    format!(
                        "policy section changed: [{t}] {} -> {}",
                        describe(b),
                        describe(policy)
                    )
                })
                .into_iter()
                .collect()
        },
        |t, _| format!("policy section removed: [{t}]"),
    ));
    out
}

fn describe(p: &CertificatePolicy) -> String {
    if !p.enabled {
        return "DISABLED".into();
    }
    let list: Vec<String> = p.allowed_subnets.iter().map(ToString::to_string).collect();
    subnets(&list)
}

/// The line for a change of `unlock.trusted_relays` (applied on reload), if it changed.
pub(super) fn relay_change(old: &[ipnet::IpNet], new: &[ipnet::IpNet]) -> Option<String> {
    let show = |l: &[ipnet::IpNet]| {
        if l.is_empty() {
            "none".to_string()
        } else {
            l.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    (old != new).then(|| format!("trusted_relays: {} -> {}", show(old), show(new)))
}

/// The configuration keys whose new value differs from what the daemon started with but that a
/// reload cannot apply (sockets, workers, database, logging).
pub(super) fn restart_needed(running: &Config, fresh: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            out.push(key);
        }
    };
    check(running.state_dir != fresh.state_dir, "state_dir");
    check(running.log_filter != fresh.log_filter, "log.level");
    check(running.log_format != fresh.log_format, "log.format");
    check(running.metrics_listen != fresh.metrics_listen, "metrics");
    check(
        running.unlock.is_some() != fresh.unlock.is_some(),
        "unlock.enabled",
    );
    if let (Some(a), Some(b)) = (&running.unlock, &fresh.unlock) {
        check(a.interfaces != b.interfaces, "unlock.interfaces");
        check(a.v4_listen != b.v4_listen, "unlock.v4 / unlock.v4_listen");
        check(a.v6_port != b.v6_port, "unlock.v6 / unlock.v6_port");
        check(
            a.v4_client_port != b.v4_client_port,
            "unlock.v4_client_port",
        );
        check(
            a.v6_client_port != b.v6_client_port,
            "unlock.v6_client_port",
        );
        check(a.v4_relay_port != b.v4_relay_port, "unlock.v4_relay_port");
        check(a.v6_relay_port != b.v6_relay_port, "unlock.v6_relay_port");
        check(a.workers != b.workers, "unlock.workers");
        check(
            a.queue_capacity != b.queue_capacity,
            "unlock.queue_capacity",
        );
        check(
            a.max_request_age != b.max_request_age,
            "unlock.max_request_age_ms",
        );
        check(
            a.rate_limit_burst != b.rate_limit_burst,
            "unlock.rate_limit_burst",
        );
        check(
            a.rate_limit_per_second != b.rate_limit_per_second,
            "unlock.rate_limit_per_second",
        );
        check(
            a.receive_buffer_bytes != b.receive_buffer_bytes,
            "unlock.receive_buffer_bytes",
        );
        check(a.relay_share != b.relay_share, "unlock.relay_share");
    }
    check(
        running.escrow.is_some() != fresh.escrow.is_some(),
        "escrow.enabled",
    );
    if let (Some(a), Some(b)) = (&running.escrow, &fresh.escrow) {
        check(a.listen != b.listen, "escrow.listen");
        check(a.tls != b.tls, "escrow.tls_cert / escrow.tls_key");
        check(a.tls_names != b.tls_names, "escrow.tls_names");
        check(a.database_url != b.database_url, "escrow.database_url");
        check(a.kek_file != b.kek_file, "escrow.kek_file");
        check(
            a.max_body_bytes != b.max_body_bytes,
            "escrow.max_body_bytes",
        );
        check(
            a.request_timeout != b.request_timeout,
            "escrow.request_timeout_secs",
        );
        check(a.stale_after != b.stale_after, "escrow.stale_after_days");
    }
    check(
        running.unlock_records != fresh.unlock_records,
        "unlock_records",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, parse, validate};

    fn cert(t: &str, enabled: bool, subnets: &[&str]) -> LoadedCertificate {
        LoadedCertificate {
            thumbprint_hex: t.into(),
            subject: format!("CN={t}"),
            not_before: time::OffsetDateTime::UNIX_EPOCH,
            not_after: time::OffsetDateTime::UNIX_EPOCH,
            enabled,
            disabled_by: None,
            allowed_subnets: subnets.iter().map(|s| s.to_string()).collect(),
            source: format!("/etc/netunlockd/{t}.pem").into(),
        }
    }

    fn keys(certs: Vec<LoadedCertificate>, ini: Option<&str>) -> LoadedKeys {
        LoadedKeys {
            certificates: certs,
            policy_file: ini.map(|t| netunlock::parse_wds_ini(t).unwrap()),
        }
    }

    const T1: &str = "1111111111111111111111111111111111111111";
    const T2: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn key_changes_table() {
        let ini_a = format!("[SUBNETS]\nlab=10.1.0.0/16\n[{T1}]\nlab\n");
        let ini_b = format!("[SUBNETS]\nlab=10.2.0.0/16\ndmz=192.168.0.0/24\n[{T2}]\nDISABLED\n");
        let cases: Vec<(&str, LoadedKeys, LoadedKeys, Vec<&str>)> = vec![
            (
                "nothing changed",
                keys(vec![cert(T1, true, &[])], None),
                keys(vec![cert(T1, true, &[])], None),
                vec![],
            ),
            (
                "rotation: one added, one removed",
                keys(vec![cert(T1, true, &[])], None),
                keys(vec![cert(T2, true, &[])], None),
                vec![
                    "certificate added: 2222222222222222222222222222222222222222 (CN=2222222222222222222222222222222222222222, /etc/netunlockd/2222222222222222222222222222222222222222.pem)",
                    "certificate removed: 1111111111111111111111111111111111111111 (CN=1111111111111111111111111111111111111111)",
                ],
            ),
            (
                "disabled and restricted",
                keys(vec![cert(T1, true, &[])], None),
                keys(vec![cert(T1, false, &["10.0.0.0/8"])], None),
                vec![
                    "certificate 1111111111111111111111111111111111111111 disabled",
                    "certificate 1111111111111111111111111111111111111111 allowed subnets: all -> 10.0.0.0/8",
                ],
            ),
            (
                "policy file added",
                keys(vec![], None),
                keys(vec![], Some(&ini_a)),
                vec![
                    "subnet policy file now applied",
                    "policy subnet added: lab = 10.1.0.0/16",
                    "policy section added: [1111111111111111111111111111111111111111] 10.1.0.0/16",
                ],
            ),
            (
                "policy file edited",
                keys(vec![], Some(&ini_a)),
                keys(vec![], Some(&ini_b)),
                vec![
                    "policy subnet added: dmz = 192.168.0.0/24",
                    "policy subnet changed: lab = 10.1.0.0/16 -> lab = 10.2.0.0/16",
                    "policy section added: [2222222222222222222222222222222222222222] DISABLED",
                    "policy section removed: [1111111111111111111111111111111111111111]",
                ],
            ),
            (
                "policy file dropped",
                keys(vec![], Some(&ini_a)),
                keys(vec![], None),
                vec![
                    "subnet policy file no longer applied",
                    "policy subnet removed: lab = 10.1.0.0/16",
                    "policy section removed: [1111111111111111111111111111111111111111]",
                ],
            ),
        ];
        for (name, old, new, want) in cases {
            assert_eq!(key_changes(&old, &new), want, "{name}");
        }
    }

    #[test]
    fn relay_change_table() {
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        assert_eq!(relay_change(&[], &[]), None);
        assert_eq!(
            relay_change(&[], &[net("10.0.0.1/32")]).as_deref(),
            Some("trusted_relays: none -> 10.0.0.1/32")
        );
        assert_eq!(
            relay_change(&[net("10.0.0.1/32")], &[]).as_deref(),
            Some("trusted_relays: 10.0.0.1/32 -> none")
        );
    }

    fn config(text: &str) -> Config {
        validate(
            parse(text).unwrap(),
            None,
            &Overrides::default(),
            Some("/var/lib/netunlockd".into()),
        )
        .unwrap()
    }

    #[test]
    fn restart_needed_table() {
        let base = "[escrow]\nenabled = false\n";
        let cases: &[(&str, &str, &[&str])] = &[
            ("identical", base, &[]),
            (
                "certificates and relays reload, no restart",
                "[unlock]\ntrusted_relays = [\"10.0.0.1/32\"]\nsubnet_policy = \"/etc/x.ini\"\n[escrow]\nenabled = false\n",
                &[],
            ),
            (
                "workers and interfaces",
                "[unlock]\nworkers = 7\ninterfaces = [\"eth1\"]\n[escrow]\nenabled = false\n",
                &["unlock.interfaces", "unlock.workers"],
            ),
            (
                "log level and metrics",
                "[log]\nlevel = \"debug\"\n[metrics]\nenabled = false\n[escrow]\nenabled = false\n",
                &["log.level", "metrics"],
            ),
            (
                "escrow turned on (and with it the unlock records)",
                "",
                &["escrow.enabled", "unlock_records"],
            ),
        ];
        let running = config(base);
        for (name, text, want) in cases {
            assert_eq!(restart_needed(&running, &config(text)), *want, "{name}");
        }
    }

    /// The recorder and the console's "no Network Unlock in N days" window start with the daemon.
    #[test]
    fn unlock_record_settings_need_a_restart() {
        let running = config("");
        let fresh = config("[unlock_records]\nno_unlock_days = 7\n");
        assert_eq!(restart_needed(&running, &fresh), ["unlock_records"]);
        assert_eq!(
            fresh.escrow.as_ref().and_then(|e| e.unlock_window_days),
            Some(7)
        );
        let off = config("[unlock_records]\nenabled = false\n");
        assert_eq!(off.escrow.as_ref().and_then(|e| e.unlock_window_days), None);
    }
}
