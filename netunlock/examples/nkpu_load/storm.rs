//! A boot storm: many distinct clients, one request each.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netunlock::client::verify_v4_reply;
use netunlock::responder::pktinfo::recv_v4;
use netunlock::responder::{Outcome, RateLimit};

use crate::Args;
use crate::netns::{TestNet, in_ns};
use crate::rig::{
    Client, Keys, LATE, Server, add_client_addrs, client_addr, client_socket, cores, ms,
    percentile, send_from,
};

struct Report {
    label: String,
    workers: usize,
    sent: usize,
    answered: usize,
    bad: usize,
    late: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    expired: u64,
    queue_full: u64,
    rate_limited: u64,
    raw_rsa: f64,
}

fn scenario(
    label: &str,
    workers: usize,
    net: &TestNet,
    keys: &Keys,
    clients: &[Client],
    rate: u64,
) -> Report {
    let server = Server::start(
        net,
        keys,
        workers,
        RateLimit {
            burst: 4,
            per_second: 1.0,
        },
    );
    let n = clients.len();
    let (sent_at, replies, start) = in_ns(&net.client, || {
        let sock = client_socket();
        let recv_sock = sock.try_clone().expect("clone");
        let mut sent_at = vec![None::<Instant>; n];
        let start = Instant::now();
        let replies = std::thread::scope(|scope| {
            let receiver = scope.spawn(|| {
                let mut got: Vec<(Instant, Vec<u8>)> = Vec::with_capacity(n);
                let mut buf = [0u8; 2048];
                recv_sock
                    .set_read_timeout(Some(Duration::from_secs(4)))
                    .expect("timeout");
                while got.len() < n {
                    match recv_v4(recv_sock.as_fd(), &mut buf) {
                        Ok(r) if r.len >= 8 => {
                            let now = Instant::now();
                            let at = r.kernel_age.and_then(|a| now.checked_sub(a)).unwrap_or(now);
                            got.push((at, buf[..r.len].to_vec()));
                        }
                        Ok(_) => {}
                        Err(_) => break, // 4 s of silence: everything that will come has come
                    }
                }
                got
            });
            let pace = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
            for (i, c) in clients.iter().enumerate() {
                if let Some(p) = pace {
                    let due = start + p * u32::try_from(i).expect("index");
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                send_from(&sock, &c.request, c.addr);
                // Taken after the send: the datagram is in the server's socket buffer when
                // sendmsg returns on a veth, so a preemption of this thread before it is not counted.
                sent_at[i] = Some(Instant::now());
            }
            receiver.join().expect("receiver")
        });
        (sent_at, replies, start)
    });
    let mut replied_at = vec![None::<Instant>; n];
    let mut bad = 0usize;
    for (at, datagram) in replies {
        let xid = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
        let idx = (xid & 0x00ff_ffff) as usize;
        match clients.get(idx) {
            Some(c) if verify_v4_reply(&datagram, c.xid, &c.mac, &c.secrets).is_ok() => {
                if replied_at[idx].is_none() {
                    replied_at[idx] = Some(at);
                }
            }
            _ => bad += 1,
        }
    }
    let last_reply = replied_at.iter().flatten().max().copied().unwrap_or(start);
    let mut latencies: Vec<Duration> = sent_at
        .iter()
        .zip(&replied_at)
        .filter_map(|(s, r)| Some(r.as_ref()?.saturating_duration_since(*s.as_ref()?)))
        .collect();
    latencies.sort();
    let report = Report {
        label: label.to_string(),
        workers,
        sent: n,
        answered: latencies.len(),
        bad,
        late: latencies.iter().filter(|l| **l > LATE).count(),
        elapsed: last_reply.saturating_duration_since(start),
        latencies,
        expired: server.count(Outcome::Expired),
        queue_full: server.count(Outcome::QueueFull),
        rate_limited: server.count(Outcome::RateLimited),
        raw_rsa: 0.0,
    };
    server.stop();
    report
}

pub(crate) fn run(args: &Args) {
    let cores = cores();
    let keys = Keys::generate();
    let net = TestNet::new().expect("namespaces");
    eprintln!("adding {} client addresses…", args.clients);
    add_client_addrs(&net, args.clients);
    eprintln!(
        "preparing {} clients (RSA public-key encryptions)…",
        args.clients
    );
    let t = Instant::now();
    let clients: Vec<Client> = (0..args.clients)
        .map(|i| Client::new(&keys, u32::try_from(i).expect("index"), client_addr(i)))
        .collect();
    eprintln!("prepared in {:.1} s", t.elapsed().as_secs_f64());

    let mut reports = Vec::new();
    for w in &args.workers {
        let label = if *w == 0 {
            format!("all cores ({cores})")
        } else {
            format!("{w} worker(s)")
        };
        eprintln!(
            "running: {label}, {} clients, rate {}…",
            args.clients,
            if args.rate == 0 {
                "burst".to_string()
            } else {
                format!("{}/s", args.rate)
            }
        );
        // Raw RSA rate with the same number of threads, measured right before and after (shared machine).
        let threads = if *w == 0 { cores } else { *w };
        let before = keys.raw_rsa(threads, Duration::from_millis(700));
        let mut report = scenario(&label, *w, &net, &keys, &clients, args.rate);
        let after = keys.raw_rsa(threads, Duration::from_millis(700));
        // Best of the two: other load on the machine only ever slows a measurement down.
        report.raw_rsa = before.max(after);
        reports.push(report);
        std::thread::sleep(Duration::from_millis(500));
    }

    println!();
    println!(
        "| scenario | workers | sent | answered | replies/s | raw RSA decrypt/s (same threads) | replies / raw RSA | p50 | p90 | p99 | max | > 2 s | expired | queue full | rate limited | bad replies |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        let rps = r.answered as f64 / r.elapsed.as_secs_f64().max(1e-9);
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0}% | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            if r.workers == 0 { cores } else { r.workers },
            r.sent,
            r.answered,
            rps,
            r.raw_rsa,
            100.0 * rps / r.raw_rsa,
            ms(percentile(&r.latencies, 0.50)),
            ms(percentile(&r.latencies, 0.90)),
            ms(percentile(&r.latencies, 0.99)),
            ms(r.latencies.last().copied().unwrap_or_default()),
            r.late,
            r.expired,
            r.queue_full,
            r.rate_limited,
            r.bad,
        );
    }
    let late: usize = reports.iter().map(|r| r.late).sum();
    println!();
    println!(
        "replies later than 2 s: {late} (must be 0); unanswered requests were dropped as expired or queue-full, never answered late"
    );
    if late > 0 {
        std::process::exit(1);
    }
}
