//! `bde-network-unlock.ini`: Microsoft's example verbatim and every error case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ipnet::IpNet;
use netunlock::{CertificatePolicy, IniError, decode_ini_bytes, parse_wds_ini};

const MICROSOFT_EXAMPLE: &str = "[SUBNETS]
SUBNET1=10.185.250.0/24 ; a comment about this subrange could be here, after the semicolon
SUBNET2=10.185.252.200/28
SUBNET3= 2001:4898:a:2::/64 ; an IPv6 subnet
SUBNET4=2001:4898:a:3::/64; in production, the admin would likely give more useful names, like BUILDING9-EXCEPT-RECEP.

[2158a767e1c14e88e27a4c0aee111d2de2eafe60]
;Comments could be added here to indicate when the cert was issued, which Group Policy should get it, and so on.
;This list shows this cert is allowed to unlock clients only on the SUBNET1 and SUBNET3 subnets. In this example, SUBNET2 is commented out.
SUBNET1
;SUBNET2
SUBNET3
";

fn thumb(s: &str) -> [u8; 20] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn microsoft_example() {
    let p = parse_wds_ini(MICROSOFT_EXAMPLE).unwrap();
    let names: Vec<_> = p.subnets().iter().map(|(n, s)| (n.as_str(), *s)).collect();
    assert_eq!(
        names,
        vec![
            ("SUBNET1", net("10.185.250.0/24")),
            ("SUBNET2", net("10.185.252.192/28")),
            ("SUBNET3", net("2001:4898:a:2::/64")),
            ("SUBNET4", net("2001:4898:a:3::/64")),
        ],
        "host bits of SUBNET2 masked"
    );
    let cert = p
        .policy_for(&thumb("2158a767e1c14e88e27a4c0aee111d2de2eafe60"))
        .unwrap();
    assert_eq!(
        cert,
        &CertificatePolicy {
            enabled: true,
            allowed_subnets: vec![net("10.185.250.0/24"), net("2001:4898:a:2::/64")],
        }
    );
    assert!(cert.allows_address("10.185.250.17".parse().unwrap()));
    assert!(
        !cert.allows_address("10.185.252.200".parse().unwrap()),
        "SUBNET2 commented out"
    );
    assert!(
        cert.allows(&netunlock::PolicyAddrs::direct("fe80::1".parse().unwrap())),
        "link-local bypass (a direct DHCPv6 request)"
    );
    assert!(
        p.policy_for(&[0; 20]).is_none(),
        "no section → no restriction"
    );
}

#[test]
fn disabled_empty_uppercase_crlf_and_bom() {
    let text = "\u{feff}[2158A767E1C14E88E27A4C0AEE111D2DE2EAFE60]\r\nDISABLED\r\n\r\n[0000000000000000000000000000000000000001]\r\n; empty = all subnets\r\n[subnets]\r\nLAB=192.0.2.0/24\r\n[0000000000000000000000000000000000000002]\r\n lab \r\n";
    let p = parse_wds_ini(text).unwrap();
    assert!(
        !p.policy_for(&thumb("2158a767e1c14e88e27a4c0aee111d2de2eafe60"))
            .unwrap()
            .enabled
    );
    let mut one = [0u8; 20];
    one[19] = 1;
    assert_eq!(p.policy_for(&one), Some(&CertificatePolicy::allow_all()));
    one[19] = 2;
    assert_eq!(
        p.policy_for(&one).unwrap().allowed_subnets,
        vec![net("192.0.2.0/24")],
        "names are case-insensitive and may precede [SUBNETS]"
    );
    assert_eq!(parse_wds_ini("").unwrap(), Default::default());
    assert_eq!(
        parse_wds_ini("; only a comment\n\n").unwrap(),
        Default::default()
    );
}

#[test]
fn errors_name_the_line() {
    let t = "[0000000000000000000000000000000000000001]";
    let cases: Vec<(&str, String, IniError)> = vec![
        (
            "text before any section",
            "SUBNET1=10.0.0.0/8\n".into(),
            IniError::OutsideSection { line: 1 },
        ),
        (
            "unknown section",
            "[SUBNETS]\n[GLOBAL]\n".into(),
            IniError::UnknownSection {
                line: 2,
                name: "GLOBAL".into(),
            },
        ),
        (
            "spaces in the thumbprint",
            "[21 58 a7 67 e1 c1 4e 88 e2 7a 4c 0a ee 11 1d 2d e2 ea fe 60]\n".into(),
            IniError::UnknownSection {
                line: 1,
                name: "21 58 a7 67 e1 c1 4e 88 e2 7a 4c 0a ee 11 1d 2d e2 ea fe 60".into(),
            },
        ),
        (
            "39 hex digits",
            "[2158a767e1c14e88e27a4c0aee111d2de2eafe6]\n".into(),
            IniError::UnknownSection {
                line: 1,
                name: "2158a767e1c14e88e27a4c0aee111d2de2eafe6".into(),
            },
        ),
        (
            "unterminated header",
            "[SUBNETS\n".into(),
            IniError::BadSectionHeader { line: 1 },
        ),
        (
            "duplicate SUBNETS",
            "[SUBNETS]\n[SUBNETS]\n".into(),
            IniError::DuplicateSection {
                line: 2,
                name: "SUBNETS".into(),
            },
        ),
        (
            "duplicate certificate section",
            format!("{t}\n\n{}\n", t.to_uppercase()),
            IniError::DuplicateSection {
                line: 3,
                name: t.trim_matches(['[', ']']).to_uppercase(),
            },
        ),
        (
            "subnet line without =",
            "[SUBNETS]\nSUBNET1 10.0.0.0/8\n".into(),
            IniError::BadSubnetLine { line: 2 },
        ),
        (
            "subnet without a name",
            "[SUBNETS]\n=10.0.0.0/8\n".into(),
            IniError::BadSubnetLine { line: 2 },
        ),
        (
            "ENABLED as a subnet name",
            "[SUBNETS]\nENABLED=10.0.0.0/8\n".into(),
            IniError::ReservedSubnetName {
                line: 2,
                name: "ENABLED".into(),
            },
        ),
        (
            "DISABLED as a subnet name",
            "[SUBNETS]\ndisabled=10.0.0.0/8\n".into(),
            IniError::ReservedSubnetName {
                line: 2,
                name: "disabled".into(),
            },
        ),
        (
            "duplicate subnet name",
            "[SUBNETS]\nA=10.0.0.0/8\na=10.1.0.0/16\n".into(),
            IniError::DuplicateSubnet {
                line: 3,
                name: "a".into(),
            },
        ),
        (
            "CIDR without prefix",
            "[SUBNETS]\nA=10.0.0.1\n".into(),
            IniError::BadCidr {
                line: 2,
                value: "10.0.0.1".into(),
            },
        ),
        (
            "CIDR prefix too long",
            "[SUBNETS]\nA=10.0.0.0/33\n".into(),
            IniError::BadCidr {
                line: 2,
                value: "10.0.0.0/33".into(),
            },
        ),
        (
            "CIDR empty",
            "[SUBNETS]\nA= ; nothing\n".into(),
            IniError::BadCidr {
                line: 2,
                value: "".into(),
            },
        ),
        (
            "undefined subnet",
            format!("[SUBNETS]\nA=10.0.0.0/8\n{t}\nA\nB\n"),
            IniError::UndefinedSubnet {
                line: 5,
                name: "B".into(),
            },
        ),
        (
            "assignment in a certificate section",
            format!("{t}\nA=10.0.0.0/8\n"),
            IniError::BadCertificateLine {
                line: 2,
                text: "A=10.0.0.0/8".into(),
            },
        ),
    ];
    for (name, text, expected) in cases {
        assert_eq!(parse_wds_ini(&text), Err(expected), "{name}");
    }
    let message = parse_wds_ini("[SUBNETS]\nA=nonsense\n")
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("line 2:"), "{message}");
}

#[test]
fn decodes_utf8_and_utf16_files() {
    let mut utf16le = vec![0xff, 0xfe];
    utf16le.extend(MICROSOFT_EXAMPLE.encode_utf16().flat_map(u16::to_le_bytes));
    let mut utf16be = vec![0xfe, 0xff];
    utf16be.extend(MICROSOFT_EXAMPLE.encode_utf16().flat_map(u16::to_be_bytes));
    for bytes in [MICROSOFT_EXAMPLE.as_bytes().to_vec(), utf16le, utf16be] {
        let text = decode_ini_bytes(&bytes).unwrap();
        assert_eq!(
            parse_wds_ini(&text).unwrap(),
            parse_wds_ini(MICROSOFT_EXAMPLE).unwrap()
        );
    }
    assert_eq!(
        decode_ini_bytes(&[0xff, 0xfe, 0x41]),
        Err(IniError::Encoding)
    );
    assert_eq!(decode_ini_bytes(&[0xc3, 0x28]), Err(IniError::Encoding));
}
