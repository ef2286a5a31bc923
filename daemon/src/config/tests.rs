use std::path::PathBuf;

use super::*;

fn validate_text(text: &str) -> Result<Config> {
    let wire = parse(text)?;
    validate(
        wire,
        None,
        &Overrides::default(),
        Some(PathBuf::from("/srv/state")),
    )
}

#[test]
fn empty_file_gives_every_default() {
    let c = validate_text("").unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/srv/state"));
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9567".parse().unwrap()));
    let u = c.unlock.unwrap();
    assert_eq!(u.v4_listen, Some("0.0.0.0:67".parse().unwrap()));
    assert_eq!(u.v6_port, Some(547));
    assert_eq!(u.max_request_age, Duration::from_secs(2));
    assert!(u.certificates.is_empty());
    let e = c.escrow.unwrap();
    assert_eq!(e.database_url, "sqlite:///srv/state/escrow.db?mode=rwc");
    assert_eq!(e.kek_file, PathBuf::from("/srv/state/kek.bin"));
    assert!(e.tls.is_none());
}

#[test]
fn the_shipped_example_config_is_valid() {
    let text = include_str!("../../../packaging/netunlockd.toml");
    validate_text(text).unwrap();
}

#[test]
fn state_dir_precedence_is_cli_then_file_then_systemd() {
    let wire = parse("state_dir = \"/from/file\"").unwrap();
    let cli = Overrides {
        state_dir: Some("/from/cli".into()),
        log_format: None,
    };
    let c = validate(wire.clone(), None, &cli, Some("/from/env".into())).unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/from/cli"));
    let c = validate(wire, None, &Overrides::default(), Some("/from/env".into())).unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/from/file"));
    let c = validate(
        WireConfig::default(),
        None,
        &Overrides::default(),
        Some("/a:/b".into()),
    )
    .unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/a"));
    let c = validate(WireConfig::default(), None, &Overrides::default(), None).unwrap();
    assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
}

#[test]
fn certificates_and_subnets_are_read() {
    let c = validate_text(
        r#"
        [[unlock.certificate]]
        cert = "/etc/netunlockd/a.pem"
        key = "/etc/netunlockd/a.key"
        allowed_subnets = ["10.0.0.7/24", "2001:db8::/64"]
        [[unlock.certificate]]
        cert = "/etc/netunlockd/b.pfx"
        pfx_password_file = "/etc/netunlockd/b.pass"
        enabled = false
        "#,
    )
    .unwrap();
    let certs = c.unlock.unwrap().certificates;
    assert_eq!(certs.len(), 2);
    assert_eq!(
        certs[0].allowed_subnets[0].to_string(),
        "10.0.0.0/24",
        "host bits are masked"
    );
    assert!(!certs[1].enabled);
}

#[test]
fn bad_configurations_are_rejected_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        ("unknown_key = 1", "unknown field"),
        ("[unlock]\nbogus = true", "unknown field"),
        ("version = 2", "version 2 is not supported"),
        ("[log]\nformat = \"xml\"", "log.format"),
        ("[log]\nlevel = \"info,,=[\"", "log.level"),
        ("[unlock]\nv4 = false\nv6 = false", "both v4 and v6"),
        ("[unlock]\nmax_request_age_ms = 5", "max_request_age_ms"),
        ("[unlock]\nqueue_capacity = 0", "queue_capacity"),
        ("[unlock]\nrate_limit_per_second = 0.0", "rate_limit"),
        (
            "[unlock]\ntrusted_relays = [\"0.0.0.0/0\"]",
            "trusted_relays",
        ),
        ("[unlock]\ntrusted_relays = [\"::/0\"]", "trusted_relays"),
        (
            "[unlock]\ntrusted_relays = [\"224.0.0.0/4\"]",
            "trusted_relays",
        ),
        (
            "[unlock]\ntrusted_relays = [\"10.0.0.1\"]",
            "trusted_relays",
        ),
        ("[unlock]\nrelay_share = 0", "relay_share"),
        (
            "[unlock]\ninterfaces = [\"this-name-is-far-too-long\"]",
            "not a valid interface",
        ),
        (
            "[[unlock.certificate]]\ncert = \"/x.pem\"",
            "`key` is required",
        ),
        (
            "[[unlock.certificate]]\ncert = \"/x.pem\"\nkey = \"/x.key\"\nallowed_subnets = [\"10.0.0.0/33\"]",
            "invalid",
        ),
        ("[escrow]\ntls_cert = \"/c.pem\"", "given together"),
        (
            "[escrow]\ndatabase_url = \"mysql://u:secret@h/db\"",
            "is not supported; use sqlite:",
        ),
        (
            "[escrow]\ndatabase_url = \"sqlite::memory:\"",
            "would lose every escrowed key",
        ),
        ("[escrow]\nmax_body_bytes = 10", "max_body_bytes"),
        (
            "[escrow]\nmax_connections_per_client = 0",
            "max_connections_per_client must be 1 to 1024",
        ),
        (
            "[escrow]\nmax_connections_per_client = 5000",
            "max_connections_per_client must be 1 to 1024",
        ),
        (
            "[unlock]\nenabled = false\n[escrow]\nenabled = false",
            "nothing to serve",
        ),
        ("[metrics]\nlisten = \"0.0.0.0:8443\"", "different ports"),
        ("[unlock]\nv4_listen = \"0.0.0.0:0\"", "must name a port"),
        ("[unlock\n", "expected"),
    ];
    for (text, expected) in cases {
        let err = format!("{:#}", validate_text(text).unwrap_err());
        assert!(
            err.contains(expected),
            "config {text:?}: error {err:?} does not mention {expected:?}"
        );
        assert!(
            !err.contains("secret"),
            "password leaked into the error: {err}"
        );
    }
}

#[test]
fn the_per_client_connection_cap_defaults_to_64_and_can_be_raised() {
    let escrow = |c: Config| c.escrow.unwrap().max_connections_per_client;
    assert_eq!(escrow(validate_text("").unwrap()), 64);
    assert_eq!(
        escrow(validate_text("[escrow]\nmax_connections_per_client = 512").unwrap()),
        512
    );
}

#[test]
fn database_passwords_are_redacted() {
    assert_eq!(
        redact_url("postgres://u:pw@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    assert_eq!(redact_url("sqlite:///x.db"), "sqlite:///x.db");
}
