//! Can a client on the network tell key-protector classes apart by the reply time? (issue 7, item 5)

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use aws_lc_rs::rsa::{Pkcs1PublicEncryptingKey, PublicEncryptingKey};
use netunlock::client::{V4ClientParams, build_v4_request};
use netunlock::responder::RateLimit;
use netunlock::responder::pktinfo::recv_v4;

use crate::Args;
use crate::netns::{CLIENT_V4, TestNet, in_ns};
use crate::rig::{Keys, Server, client_socket, send_from};
use crate::stats;

const KP_LEN: usize = netunlock::KP_LEN;

fn encrypt(public: &Pkcs1PublicEncryptingKey, plain: &[u8]) -> [u8; KP_LEN] {
    let mut out = [0u8; KP_LEN];
    let n = public.encrypt(plain, &mut out).expect("encrypt").len();
    assert_eq!(n, KP_LEN);
    out
}

pub(crate) fn run(args: &Args) {
    let keys = Keys::generate();
    let net = TestNet::new().expect("namespaces");
    let (_, cert) = x509_parser::parse_x509_certificate(&keys.cert_der).expect("certificate");
    let public = Pkcs1PublicEncryptingKey::new(
        PublicEncryptingKey::from_der(cert.tbs_certificate.subject_pki.raw).expect("public key"),
    )
    .expect("pkcs1");
    // A pool of key protectors per class, cycled through.
    const POOL: usize = 32;
    let mut rng = [0u8; KP_LEN * POOL];
    aws_lc_rs::rand::fill(&mut rng).expect("rng");
    let classes: Vec<(&str, Vec<[u8; KP_LEN]>)> = vec![
        (
            "valid",
            (0..POOL)
                .map(|i| encrypt(&public, &[i as u8 + 1; 64]))
                .collect(),
        ),
        (
            "forged (random < n)",
            (0..POOL)
                .map(|i| {
                    let mut kp = [0u8; KP_LEN];
                    kp.copy_from_slice(&rng[i * KP_LEN..(i + 1) * KP_LEN]);
                    kp[0] = 0x01;
                    kp
                })
                .collect(),
        ),
        (
            "wrong length (63-byte message)",
            (0..POOL)
                .map(|i| encrypt(&public, &[i as u8 + 1; 63]))
                .collect(),
        ),
        ("out of range (≥ n)", vec![[0xff; KP_LEN]; POOL]),
    ];
    let server = Server::start(
        &net,
        &keys,
        1,
        RateLimit {
            burst: 0,
            per_second: 0.0,
        },
    );
    let samples = args.samples;
    let times = in_ns(&net.client, || {
        let sock = client_socket();
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(samples); classes.len()];
        let mut order: Vec<usize> = (0..classes.len()).collect();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut xid: u32 = 0x5100_0000;
        let mut buf = [0u8; 2048];
        for round in 0..samples + 10 {
            for i in (1..order.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for &c in &order {
                xid += 1;
                let kp = &classes[c].1[round % POOL];
                let b = xid.to_be_bytes();
                let req = build_v4_request(
                    &V4ClientParams {
                        xid,
                        mac: [2, 0x51, b[0], b[1], b[2], b[3]],
                        ciaddr: CLIENT_V4,
                        giaddr: Ipv4Addr::UNSPECIFIED,
                        siaddr: Ipv4Addr::UNSPECIFIED,
                        lease_options: true,
                        message_type: None,
                    },
                    &keys.thumbprint,
                    kp,
                );
                send_from(&sock, &req, CLIENT_V4);
                let sent = Instant::now();
                loop {
                    let Ok(r) = recv_v4(sock.as_fd(), &mut buf) else {
                        panic!("no reply within 2 s (class {})", classes[c].0);
                    };
                    if r.len >= 8 && buf[4..8] == b {
                        let now = Instant::now();
                        let at = r.kernel_age.and_then(|a| now.checked_sub(a)).unwrap_or(now);
                        // The first ten rounds warm caches and are not kept.
                        if round >= 10 {
                            times[c].push(at.saturating_duration_since(sent).as_nanos() as f64);
                        }
                        break;
                    }
                }
            }
        }
        times
    });
    server.stop();
    let summaries: Vec<_> = times.iter().map(|t| stats::summarise(t)).collect();
    println!(
        "reply round-trip by key-protector class, over a veth between two namespaces, one RSA worker, \
         {samples} interleaved samples per class"
    );
    println!("{}", stats::HEADER);
    for (i, (name, _)) in classes.iter().enumerate() {
        println!("{}", stats::row(name, &summaries[i], &summaries[0]));
    }
}
