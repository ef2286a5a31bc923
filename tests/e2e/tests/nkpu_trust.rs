//! Network Unlock trust boundaries (issue 7), against the real `netunlockd` in network namespaces:
//! the subnet policy rests on addresses a sender cannot forge, replies go only to the requester, one
//! flooding host cannot starve the others, one process owns the DHCP ports, and certificates that
//! will not work are reported loudly.
//!
//! Every test here was first written as the reproduction of a finding of the security review and
//! failed against the code before the fix.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netunlock::RelayHop;
use netunlock::client::{
    ClientSecrets, V4ClientParams, V6ClientParams, build_v4_request, build_v6_request,
    new_key_protector, unwrap_relay_reply, verify_v4_reply, wrap_relay_forward,
};
use socket2::{Domain, Protocol, Socket, Type};

use crate::harness::{
    CLIENT_IF, CLIENT_V4, CLIENT_V6, CertEntry, Daemon, METRICS, Netns, SERVER_IF, SERVER_V4,
    SERVER_V6, Topology, UnlockCert, config_toml_with, metric, netunlockd_bin, output_text, scrape,
    scrape_until, skip_reason,
};

/// Longer than the firmware's 2 s retransmission window.
const SILENCE: Duration = Duration::from_millis(2500);

macro_rules! require_netns {
    () => {
        if let Some(reason) = skip_reason() {
            println!("SKIP: {reason}");
            return;
        }
    };
}

/// A running daemon in its topology.
struct Setup {
    // Field order = drop order: the daemon dies before its namespaces are removed.
    daemon: Daemon,
    topo: Topology,
    dir: tempfile::TempDir,
}

/// One certificate with the given allowed subnets, plus extra `[unlock]` settings.
fn start(allowed: &[&str], unlock_extra: &str) -> (Setup, UnlockCert) {
    let dir = tempfile::tempdir().expect("tempdir");
    let topo = Topology::new();
    let cert = UnlockCert::generate(dir.path(), "a");
    let entry = CertEntry {
        cert: &cert,
        enabled: true,
        allowed_subnets: allowed.to_vec(),
    };
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let config = config_toml_with(&state, &[entry], unlock_extra);
    let daemon = Daemon::start(&topo.server, dir.path(), &config);
    (Setup { daemon, topo, dir }, cert)
}

fn requests_total(text: &str, family: &str, outcome: &str) -> f64 {
    metric(
        text,
        &format!(r#"netunlockd_requests_total{{family="{family}",outcome="{outcome}"}}"#),
    )
}

/// A UDP socket in the current namespace, bound to `bind` on the client veth.
fn client_socket(bind: SocketAddr) -> UdpSocket {
    let domain = if bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    s.set_reuse_address(true).expect("reuse");
    if bind.is_ipv6() {
        s.set_only_v6(true).expect("v6only");
    }
    s.bind_device(Some(CLIENT_IF.as_bytes()))
        .expect("bind device");
    s.set_broadcast(true).expect("broadcast");
    s.bind(&bind.into())
        .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    s.into()
}

/// Collects datagrams on `sock` until `wait` passes.
fn collect(sock: &UdpSocket, wait: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left)).expect("timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => got.push((buf[..n].to_vec(), from)),
            Err(_) => break,
        }
    }
    got
}

fn v4_params(xid: u32, mac: [u8; 6], ciaddr: Ipv4Addr, giaddr: Ipv4Addr) -> V4ClientParams {
    V4ClientParams {
        xid,
        mac,
        ciaddr,
        giaddr,
        siaddr: Ipv4Addr::UNSPECIFIED,
        lease_options: true,
        message_type: None,
    }
}

/// A fresh v4 request for `cert` with the given addresses.
fn v4_request(
    cert: &UnlockCert,
    n: u8,
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
) -> (Vec<u8>, u32, [u8; 6], ClientSecrets) {
    let (secrets, kp) = new_key_protector(&cert.der).expect("key protector");
    let xid = 0x7a00_0000 | u32::from(n);
    let mac = [0x02, 0x7a, 0, 0, 0, n];
    let req = build_v4_request(&v4_params(xid, mac, ciaddr, giaddr), &cert.thumbprint, &kp);
    (req, xid, mac, secrets)
}

/// Datagrams seen on the client side of the veth that the server sent from its DHCP ports (read
/// through `Debug` in assertion messages).
#[derive(Debug, Clone)]
#[allow(dead_code)]
struct Seen {
    dst: IpAddr,
    dst_port: u16,
}

/// Captures every frame on the client veth (AF_PACKET) from the server's MAC with UDP source port 67
/// or 547, for `wait`. Runs on its own thread inside the client namespace; join to get the result.
fn capture_server_replies(
    ns: &Netns,
    server_mac: [u8; 6],
    wait: Duration,
) -> std::thread::JoinHandle<Vec<Seen>> {
    let path = format!("/run/netns/{}", ns.name);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let proto = i32::from((libc::ETH_P_ALL as u16).to_be());
        let sock = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(proto)))
            .expect("AF_PACKET socket (needs root)");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let mut file = std::fs::File::from(OwnedFd::from(sock));
        ready_tx.send(()).expect("ready");
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            let Ok(n) = file.read(&mut buf) else {
                continue;
            };
            if let Some(s) = parse_frame(&buf[..n], server_mac) {
                seen.push(s);
            }
        }
        seen
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("capture started");
    handle
}

/// Ethernet → IPv4/IPv6 → UDP from the server's DHCP server ports.
fn parse_frame(f: &[u8], server_mac: [u8; 6]) -> Option<Seen> {
    if f.len() < 14 || f[6..12] != server_mac {
        return None;
    }
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let ip = &f[14..];
    let (dst, udp) = match ethertype {
        0x0800 if ip.len() >= 20 && ip[9] == 17 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
            (dst, ip.get(ihl..)?)
        }
        0x86dd if ip.len() >= 40 && ip[6] == 17 => {
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(dst)), &ip[40..])
        }
        _ => return None,
    };
    if udp.len() < 8 {
        return None;
    }
    let src_port = u16::from_be_bytes([udp[0], udp[1]]);
    let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
    matches!(src_port, 67 | 547).then_some(Seen { dst, dst_port })
}

// ---- Finding 1: the subnet policy rests on fields the sender chooses ------------------------------

/// A host outside the allowed subnet claims an allowed `ciaddr` (and answers ARP for it): the IP
/// source does not equal `ciaddr`, so it gets silence, counted as `source_mismatch`.
#[test]
fn direct_v4_with_a_ciaddr_other_than_its_source_gets_silence() {
    require_netns!();
    let (setup, cert) = start(&["10.77.0.128/25"], "");
    let client = &setup.topo.client;
    // The forger owns 10.77.0.200 at the link layer only: it sends from 10.77.0.2 (outside).
    client.exec(&["ip", "addr", "add", "10.77.0.200/32", "dev", CLIENT_IF]);
    let claimed = Ipv4Addr::new(10, 77, 0, 200);
    let (req, xid, mac, secrets) = v4_request(&cert, 1, claimed, Ipv4Addr::UNSPECIFIED);
    let got = client.enter(|| {
        let listen = client_socket(SocketAddr::from((claimed, 68)));
        let send = client_socket(SocketAddr::from((CLIENT_V4, 68)));
        send.send_to(&req, (Ipv4Addr::BROADCAST, 67)).expect("send");
        collect(&listen, SILENCE)
    });
    let unlocked = got
        .iter()
        .filter(|(d, _)| verify_v4_reply(d, xid, &mac, &secrets).is_ok())
        .count();
    assert_eq!(
        unlocked,
        0,
        "a request whose IP source is not its ciaddr must not be answered\n{}",
        setup.daemon.log_text()
    );
    let text = scrape_until(
        &setup.topo.server,
        METRICS,
        r#"netunlockd_requests_total{family="v4",outcome="source_mismatch"}"#,
        1.0,
    );
    assert_eq!(
        requests_total(&text, "v4", "source_mismatch"),
        1.0,
        "{text}"
    );
    assert_eq!(requests_total(&text, "v4", "answered"), 0.0, "{text}");
}

/// Any host can claim to be a relay (giaddr = itself, ciaddr = an allowed address); with no trusted
/// relays configured it gets silence and the log names the setting.
#[test]
fn relayed_v4_from_a_host_that_is_not_a_trusted_relay_gets_silence() {
    require_netns!();
    let (setup, cert) = start(&["10.200.0.0/16"], "");
    let (req, xid, mac, secrets) = v4_request(&cert, 2, Ipv4Addr::new(10, 200, 3, 7), CLIENT_V4);
    let got = setup.topo.client.enter(|| {
        let s = client_socket(SocketAddr::from((CLIENT_V4, 67)));
        s.send_to(&req, (SERVER_V4, 67)).expect("send");
        collect(&s, SILENCE)
    });
    assert!(
        !got.iter()
            .any(|(d, _)| verify_v4_reply(d, xid, &mac, &secrets).is_ok()),
        "a forged relay must not receive an unlocking reply\n{}",
        setup.daemon.log_text()
    );
    let text = scrape_until(
        &setup.topo.server,
        METRICS,
        r#"netunlockd_requests_total{family="v4",outcome="untrusted_relay"}"#,
        1.0,
    );
    assert_eq!(
        requests_total(&text, "v4", "untrusted_relay"),
        1.0,
        "{text}"
    );
    assert!(
        setup
            .daemon
            .wait_for_log(&["WARN", "trusted_relays"], Duration::from_secs(2)),
        "the refusal names the setting:\n{}",
        setup.daemon.log_text()
    );
}

/// A Relay-Forward whose peer is link-local used to bypass the subnet list; from an untrusted
/// source it gets silence.
#[test]
fn relayed_v6_with_a_link_local_peer_does_not_bypass_the_subnets() {
    require_netns!();
    let (setup, cert) = start(&["2001:db8:99::/64"], "");
    let (_, kp) = new_key_protector(&cert.der).expect("kp");
    let inner = build_v6_request(
        &V6ClientParams {
            xid: [1, 2, 3],
            client_duid: vec![0, 4, 9, 9, 9, 9],
        },
        &cert.thumbprint,
        &kp,
    );
    let hop = RelayHop {
        hop_count: 0,
        link_address: CLIENT_V6,
        peer_address: "fe80::1".parse().expect("addr"),
        interface_id: None,
    };
    let forward = wrap_relay_forward(&inner, &hop);
    let got = setup.topo.client.enter(|| {
        let s = client_socket(SocketAddr::V6(SocketAddrV6::new(CLIENT_V6, 547, 0, 0)));
        s.send_to(
            &forward,
            SocketAddr::V6(SocketAddrV6::new(SERVER_V6, 547, 0, 0)),
        )
        .expect("send");
        collect(&s, SILENCE)
    });
    assert!(
        !got.iter().any(|(d, _)| unwrap_relay_reply(d).is_ok()),
        "no Relay-Reply for a link-local peer on a link outside the allowed subnets\n{}",
        setup.daemon.log_text()
    );
    let text = scrape(&setup.topo.server, METRICS);
    assert_eq!(requests_total(&text, "v6", "answered"), 0.0, "{text}");
}

/// A trusted relay is answered at its own address, port 67, and the subnet policy reads both the
/// client's link as the relay states it (giaddr) and ciaddr.
#[test]
fn a_trusted_v4_relay_is_answered_and_the_policy_reads_giaddr_and_ciaddr() {
    require_netns!();
    let (setup, cert) = start(
        &["10.200.0.0/16"],
        &format!("trusted_relays = [\"{CLIENT_V4}/32\"]"),
    );
    let inside = v4_request(
        &cert,
        3,
        Ipv4Addr::new(10, 200, 3, 7),
        Ipv4Addr::new(10, 200, 3, 1),
    );
    let outside_link = v4_request(
        &cert,
        4,
        Ipv4Addr::new(10, 200, 3, 8),
        Ipv4Addr::new(10, 99, 0, 1),
    );
    let (answered, refused) = setup.topo.client.enter(|| {
        let s = client_socket(SocketAddr::from((CLIENT_V4, 67)));
        s.send_to(&inside.0, (SERVER_V4, 67)).expect("send");
        let answered = collect(&s, Duration::from_secs(3));
        s.send_to(&outside_link.0, (SERVER_V4, 67)).expect("send");
        (answered, collect(&s, SILENCE))
    });
    let (_, xid, mac, secrets) = &inside;
    assert!(
        answered
            .iter()
            .any(|(d, from)| verify_v4_reply(d, *xid, mac, secrets).is_ok()
                && *from == SocketAddr::from((SERVER_V4, 67))),
        "the trusted relay gets the reply\n{}",
        setup.daemon.log_text()
    );
    assert!(
        refused.is_empty(),
        "giaddr outside the allowed subnets: silence"
    );
    let text = scrape_until(
        &setup.topo.server,
        METRICS,
        r#"netunlockd_requests_total{family="v4",outcome="subnet_refused"}"#,
        1.0,
    );
    assert_eq!(requests_total(&text, "v4", "subnet_refused"), 1.0, "{text}");
}

/// Through a trusted DHCPv6 relay the policy reads the link-address; a link-local peer is no bypass.
#[test]
fn a_trusted_v6_relay_is_judged_by_its_link_address() {
    require_netns!();
    let (setup, cert) = start(
        &["2001:db8:99::/64"],
        &format!("trusted_relays = [\"{CLIENT_V6}/128\"]"),
    );
    let forward = |link: &str, xid: [u8; 3]| {
        let (_, kp) = new_key_protector(&cert.der).expect("kp");
        let inner = build_v6_request(
            &V6ClientParams {
                xid,
                client_duid: vec![0, 4, xid[2], 9, 9, 9],
            },
            &cert.thumbprint,
            &kp,
        );
        wrap_relay_forward(
            &inner,
            &RelayHop {
                hop_count: 0,
                link_address: link.parse().expect("addr"),
                peer_address: "fe80::1".parse().expect("addr"),
                interface_id: None,
            },
        )
    };
    let allowed = forward("2001:db8:99::1", [1, 1, 1]);
    let other = forward("fd77::2", [1, 1, 2]);
    let (answered, refused) = setup.topo.client.enter(|| {
        let s = client_socket(SocketAddr::V6(SocketAddrV6::new(CLIENT_V6, 547, 0, 0)));
        let to = SocketAddr::V6(SocketAddrV6::new(SERVER_V6, 547, 0, 0));
        s.send_to(&allowed, to).expect("send");
        let answered = collect(&s, Duration::from_secs(3));
        s.send_to(&other, to).expect("send");
        (answered, collect(&s, SILENCE))
    });
    assert!(
        answered.iter().any(|(d, _)| unwrap_relay_reply(d).is_ok()),
        "a Relay-Reply for the allowed link\n{}",
        setup.daemon.log_text()
    );
    assert!(
        refused.is_empty(),
        "no bypass for a link-local peer on another link"
    );
}

// ---- Finding 2: replies can be aimed anywhere --------------------------------------------------

/// Requests that name a broadcast, multicast, loopback, another host, an off-link address or the
/// server itself as the reply address: nothing leaves the server, and nothing is answered.
#[test]
fn replies_go_nowhere_but_to_the_requester() {
    require_netns!();
    let (setup, cert) = start(&[], "");
    let client = &setup.topo.client;
    // Addresses the client namespace can receive on, so any reply sent to them would show.
    client.exec(&["ip", "addr", "add", "10.77.0.3/32", "dev", CLIENT_IF]);
    client.exec(&["ip", "addr", "add", "192.0.2.99/32", "dev", CLIENT_IF]);
    let server_mac = Topology::mac(&setup.topo.server, SERVER_IF);
    let capture = capture_server_replies(client, server_mac, SILENCE + Duration::from_secs(1));

    let cases: Vec<(&str, Ipv4Addr, Ipv4Addr, Ipv4Addr)> = vec![
        // (what, IP source, ciaddr, giaddr)
        (
            "limited broadcast",
            CLIENT_V4,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::UNSPECIFIED,
        ),
        (
            "subnet broadcast",
            CLIENT_V4,
            Ipv4Addr::new(10, 77, 0, 255),
            Ipv4Addr::UNSPECIFIED,
        ),
        (
            "multicast",
            CLIENT_V4,
            Ipv4Addr::new(224, 0, 0, 1),
            Ipv4Addr::UNSPECIFIED,
        ),
        (
            "loopback",
            CLIENT_V4,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::UNSPECIFIED,
        ),
        (
            "another host",
            CLIENT_V4,
            Ipv4Addr::new(10, 77, 0, 3),
            Ipv4Addr::UNSPECIFIED,
        ),
        (
            "off-link",
            CLIENT_V4,
            Ipv4Addr::new(192, 0, 2, 99),
            Ipv4Addr::UNSPECIFIED,
        ),
        // Source and ciaddr agree, but the address is not on the arrival interface's subnet.
        (
            "off-link from itself",
            Ipv4Addr::new(192, 0, 2, 99),
            Ipv4Addr::new(192, 0, 2, 99),
            Ipv4Addr::UNSPECIFIED,
        ),
        // giaddr = the server itself: it used to answer itself.
        (
            "the server itself",
            CLIENT_V4,
            Ipv4Addr::new(10, 200, 0, 9),
            SERVER_V4,
        ),
    ];
    client.enter(|| {
        for (i, (what, source, ciaddr, giaddr)) in cases.iter().enumerate() {
            let (req, ..) = v4_request(&cert, 10 + i as u8, *ciaddr, *giaddr);
            let port = if giaddr.is_unspecified() { 68 } else { 67 };
            let s = client_socket(SocketAddr::from((*source, port)));
            let to = if giaddr.is_unspecified() {
                Ipv4Addr::BROADCAST
            } else {
                SERVER_V4
            };
            s.send_to(&req, (to, 67))
                .unwrap_or_else(|e| panic!("send {what}: {e}"));
        }
    });
    let seen = capture.join().expect("capture");
    assert!(
        seen.is_empty(),
        "the server sent {} datagram(s) from its DHCP port: {seen:?}\n{}",
        seen.len(),
        setup.daemon.log_text()
    );
    let text = scrape(&setup.topo.server, METRICS);
    assert_eq!(
        requests_total(&text, "v4", "answered"),
        0.0,
        "nothing here deserves an answer (not even one to itself):\n{text}"
    );
    assert_eq!(
        requests_total(&text, "v4", "not_nkpu"),
        0.0,
        "the server must not have received its own reply:\n{text}"
    );
}

// ---- Finding 3: one host can starve every other client -----------------------------------------

/// Raw RSA-2048 decryptions per second on one thread, measured here, now (the machine is shared).
fn rsa_rate_one_thread(cert: &UnlockCert) -> f64 {
    let identity =
        certs::load_unlock_identity(&cert.cert_pem, Some(&cert.key), None).expect("identity");
    let key = aws_lc_rs::rsa::Pkcs1PrivateDecryptingKey::new(identity.decrypting_key().clone())
        .expect("pkcs1");
    let (_, kp) = new_key_protector(&cert.der).expect("kp");
    let mut out = [0u8; 256];
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_millis(300) {
        key.decrypt(&kp[..], &mut out).expect("decrypt");
        n += 1;
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

/// One host floods at more than twice the RSA capacity with random MACs; ten honest clients on
/// other addresses each send one request and retry after 2 s, as Windows does. All of them must
/// unlock, and the daemon's log must stay bounded.
#[test]
fn one_flooding_host_does_not_starve_the_others() {
    require_netns!();
    let (setup, cert) = start(&[], "");
    let client = &setup.topo.client;
    const HONEST: u8 = 10;
    for i in 0..HONEST {
        client.exec(&[
            "ip",
            "addr",
            "add",
            &format!("10.77.0.{}/32", 100 + i),
            "dev",
            CLIENT_IF,
        ]);
    }
    // Two workers in the daemon (harness config): flood at 2.5 × their capacity.
    let flood_rate = 2.5 * 2.0 * rsa_rate_one_thread(&cert);
    let flood_for = Duration::from_secs(7);
    let (_, flood_kp) = new_key_protector(&cert.der).expect("kp");
    let flood_req = build_v4_request(
        &v4_params(
            0x0f10_0d00,
            [2, 0xf1, 0, 0, 0, 0],
            CLIENT_V4,
            Ipv4Addr::UNSPECIFIED,
        ),
        &cert.thumbprint,
        &flood_kp,
    );
    let honest: Vec<_> = (0..HONEST)
        .map(|i| {
            let addr = Ipv4Addr::new(10, 77, 0, 100 + i);
            let (req, xid, mac, secrets) = v4_request(&cert, 100 + i, addr, Ipv4Addr::UNSPECIFIED);
            (addr, req, xid, mac, secrets)
        })
        .collect();
    let log_before = setup.daemon.log.lock().unwrap().len();

    let path = format!("/run/netns/{}", client.name);
    let flooder = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let s = client_socket(SocketAddr::from((CLIENT_V4, 68)));
        let mut req = flood_req;
        let start = Instant::now();
        let mut sent = 0u64;
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        while start.elapsed() < flood_for {
            let due = (start.elapsed().as_secs_f64() * flood_rate) as u64;
            while sent < due {
                // A new MAC (chaddr bytes 30..34) and xid for every packet, as the attacker did.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                req[4..8].copy_from_slice(&(rng as u32).to_be_bytes());
                req[30..34].copy_from_slice(&((rng >> 32) as u32).to_be_bytes());
                let _ = s.send_to(&req, (SERVER_V4, 67));
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        sent
    });

    // Honest clients start once the flood has filled the queue (a FIFO then holds about
    // max_request_age of work), and retry after 2 s like the firmware.
    std::thread::sleep(Duration::from_millis(2500));
    let unlocked = client.enter(|| {
        let sockets: Vec<UdpSocket> = honest
            .iter()
            .map(|(addr, ..)| client_socket(SocketAddr::from((*addr, 68))))
            .collect();
        let mut ok = vec![false; honest.len()];
        for attempt in 0..2 {
            for (i, (_, req, ..)) in honest.iter().enumerate() {
                if !ok[i] {
                    sockets[i]
                        .send_to(req, (Ipv4Addr::BROADCAST, 67))
                        .expect("send");
                }
            }
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until && ok.iter().any(|o| !o) {
                for (i, (_, _, xid, mac, secrets)) in honest.iter().enumerate() {
                    if ok[i] {
                        continue;
                    }
                    sockets[i].set_nonblocking(true).expect("nonblocking");
                    let mut buf = [0u8; 2048];
                    while let Ok((n, _)) = sockets[i].recv_from(&mut buf) {
                        if verify_v4_reply(&buf[..n], *xid, mac, secrets).is_ok() {
                            ok[i] = true;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = attempt;
        }
        ok.iter().filter(|o| **o).count()
    });
    let flooded = flooder.join().expect("flooder");
    // Give the daemon a moment to write its summary of the burst.
    std::thread::sleep(Duration::from_secs(2));
    let log: Vec<String> = setup.daemon.log.lock().unwrap()[log_before..].to_vec();
    let text = scrape(&setup.topo.server, METRICS);
    assert_eq!(
        unlocked,
        usize::from(HONEST),
        "only {unlocked} of {HONEST} honest clients unlocked while one host sent {flooded} requests \
         ({flood_rate:.0}/s)\n{text}"
    );
    let per_request = log
        .iter()
        .filter(|l| l.contains("Network Unlock request"))
        .count();
    assert!(
        per_request < 200,
        "{per_request} per-request log lines for a flood of {flooded}: the log must summarise"
    );
    // Every request is accounted for in the metrics.
    let counted: f64 = [
        "answered",
        "rate_limited",
        "queue_full",
        "expired",
        "source_mismatch",
        "not_nkpu",
    ]
    .iter()
    .map(|o| requests_total(&text, "v4", o))
    .sum();
    assert!(
        counted >= (flooded + u64::from(HONEST)) as f64 * 0.99,
        "{counted} requests counted of {} sent (the kernel may drop a few)\n{text}",
        flooded + u64::from(HONEST)
    );
}

// ---- Finding 4: one owner of the DHCP ports ----------------------------------------------------

/// A second `netunlockd serve` must not start beside a running one: the DHCP ports are taken.
#[test]
fn a_second_instance_cannot_take_the_dhcp_ports() {
    require_netns!();
    let (setup, _cert) = start(&[], "");
    let first_pid = setup.daemon.pid();
    let second = setup.dir.path().join("second");
    std::fs::create_dir_all(second.join("state")).expect("dir");
    let config = std::fs::read_to_string(&setup.daemon.config_path)
        .expect("config")
        .replace(
            &setup.dir.path().join("state").display().to_string(),
            &second.join("state").display().to_string(),
        )
        .replace("[metrics]\n", "[metrics]\nenabled = false\n");
    let config_path = second.join("netunlockd.toml");
    std::fs::write(&config_path, config).expect("write");
    let mut child = setup
        .topo
        .server
        .command(&netunlockd_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.is_some_and(|s| !s.success()),
        "the second instance kept running beside the first (it shares the DHCP ports):\n{stderr}"
    );
    assert!(
        stderr.contains("already in use") && stderr.contains("67"),
        "the error says the port is taken: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {first_pid}")) && stderr.contains("netunlockd"),
        "and by whom: {stderr}"
    );
}

// ---- Finding 6: certificates that will not work get said loudly ------------------------------

/// GET /healthz from inside a namespace: (status code, body).
fn healthz(ns: &Netns) -> (u16, String) {
    let addr: SocketAddr = METRICS.parse().expect("addr");
    ns.enter(move || {
        use std::io::Write;
        let mut s =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(s, "GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        (code, text)
    })
}

/// An expired certificate next to a valid one: a warning at start-up and in `config check`, and
/// health "degraded" (HTTP 200), not failed.
#[test]
fn an_expired_certificate_beside_a_valid_one_is_reported_loudly() {
    require_netns!();
    let dir = tempfile::tempdir().expect("tempdir");
    let topo = Topology::new();
    let valid = UnlockCert::generate(dir.path(), "valid");
    let now = time::OffsetDateTime::now_utc();
    let generated = certs::generate_unlock_certificate_valid(
        "e2e expired",
        now - time::Duration::days(60),
        now - time::Duration::days(1),
    )
    .expect("generate");
    let files = certs::write_unlock_files(dir.path(), "expired", &generated).expect("write");
    let expired = UnlockCert {
        cert_pem: files.cert_pem,
        cert_der_path: files.cert_cer,
        key: files.key,
        der: generated.cert_der.clone(),
        thumbprint: generated.thumbprint,
    };
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state");
    let config = config_toml_with(
        &state,
        &[CertEntry::new(&valid), CertEntry::new(&expired)],
        "",
    );
    let daemon = Daemon::start(&topo.server, dir.path(), &config);
    let thumb = expired.thumbprint_hex();
    assert!(
        daemon.wait_for_log(&["WARN", "expired", &thumb], Duration::from_secs(5)),
        "the expired certificate is warned about at start-up:\n{}",
        daemon.log_text()
    );
    let (code, body) = healthz(&topo.server);
    assert_eq!(
        code, 200,
        "one usable certificate remains: degraded, not failed\n{body}"
    );
    assert!(body.contains("\"degraded\""), "{body}");

    let out = Command::new(netunlockd_bin())
        .args(["config", "check", "--config"])
        .arg(&daemon.config_path)
        .output()
        .expect("config check");
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("WARNING") && text.contains(&thumb) && text.contains("expired"),
        "config check warns about the expired certificate:\n{text}"
    );
    drop(daemon);
    drop(topo);
}

/// A reload that adds a certificate the subnet policy file disables: the reload says what changed
/// (certificate added, policy file applied), warns about the disabled certificate and about a
/// changed setting that only a restart applies, and health turns degraded (still 200).
#[test]
fn a_reload_says_what_changed_and_warns_about_a_disabled_certificate() {
    require_netns!();
    let dir = tempfile::tempdir().expect("tempdir");
    let topo = Topology::new();
    let valid = UnlockCert::generate(dir.path(), "valid");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state");
    let config = config_toml_with(&state, &[CertEntry::new(&valid)], "");
    let daemon = Daemon::start(&topo.server, dir.path(), &config);
    let (code, body) = healthz(&topo.server);
    assert_eq!(code, 200, "{body}");

    let disabled = UnlockCert::generate(dir.path(), "disabled");
    let thumb = disabled.thumbprint_hex();
    let ini = dir.path().join("bde-network-unlock.ini");
    std::fs::write(
        &ini,
        format!("[SUBNETS]\nLAB=10.77.0.0/24\n\n[{thumb}]\nDISABLED\n"),
    )
    .expect("ini");
    let extra = format!(
        "subnet_policy = {:?}\nqueue_capacity = 77",
        ini.display().to_string()
    );
    let config = config_toml_with(
        &state,
        &[CertEntry::new(&valid), CertEntry::new(&disabled)],
        &extra,
    );
    std::fs::write(&daemon.config_path, config).expect("rewrite config");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    for needles in [
        &["reload: certificate added", thumb.as_str()][..],
        &["reload: subnet policy file now applied"][..],
        &["WARN", thumb.as_str(), "disabled by the subnet policy file"][..],
        &["WARN", "restart", "unlock.queue_capacity"][..],
    ] {
        assert!(
            daemon.wait_for_log(needles, Duration::from_secs(10)),
            "reload log line with {needles:?}:\n{}",
            daemon.log_text()
        );
    }
    // Health is evaluated every few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, body) = healthz(&topo.server);
        assert_eq!(code, 200, "one usable certificate remains: {body}");
        if body.contains("\"degraded\"") && body.contains(&thumb) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health names the disabled certificate as degraded:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(daemon);
    drop(topo);
}
