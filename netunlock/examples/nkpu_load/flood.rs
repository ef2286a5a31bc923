//! One host floods; honest clients on other addresses must still unlock (issue 7, finding 3).

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use netunlock::client::{V4ClientParams, build_v4_request, new_key_protector, verify_v4_reply};
use netunlock::responder::pktinfo::recv_v4;
use netunlock::responder::{Outcome, RateLimit};

use crate::Args;
use crate::logcount::{self, LOG};
use crate::netns::{CLIENT_V4, TestNet, in_ns};
use crate::rig::{
    Client, Keys, Server, add_client_addrs, client_addr, client_socket, cores, ms, percentile,
    send_from,
};

/// The Windows retry: one retransmission after 2 s.
const RETRY_AFTER: Duration = Duration::from_secs(2);

pub(crate) fn run(args: &Args) {
    logcount::install();
    let keys = Keys::generate();
    let net = TestNet::new().expect("namespaces");
    add_client_addrs(&net, args.honest);
    let workers = match args.workers.first() {
        Some(0) | None => cores(),
        Some(w) => *w,
    };
    let capacity = keys.raw_rsa(workers, Duration::from_millis(1500));
    let flood_rate = args.factor * capacity;
    let flood_for = Duration::from_secs(args.seconds);
    println!(
        "measured RSA capacity with {workers} worker thread(s): {capacity:.0} decryptions/s; flooding at \
         {:.1} × = {flood_rate:.0} requests/s for {} s from {CLIENT_V4}, a new MAC on every packet; {} honest \
         clients on other addresses, each one request + one retry after 2 s",
        args.factor,
        flood_for.as_secs(),
        args.honest
    );
    let honest: Vec<Client> = (0..args.honest)
        .map(|i| Client::new(&keys, u32::try_from(i).expect("index"), client_addr(i)))
        .collect();
    let (_, flood_kp) = new_key_protector(&keys.cert_der).expect("kp");
    let flood_req = build_v4_request(
        &V4ClientParams {
            xid: 0x0f10_0d00,
            mac: [2, 0xf1, 0, 0, 0, 0],
            ciaddr: CLIENT_V4,
            giaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            lease_options: true,
            message_type: None,
        },
        &keys.thumbprint,
        &flood_kp,
    );
    let server = Server::start(
        &net,
        &keys,
        workers,
        RateLimit {
            burst: 6,
            per_second: 1.0,
        },
    );

    let (flooded, unlocked, latencies, retried) = in_ns(&net.client, || {
        let sock = client_socket();
        let recv_sock = sock.try_clone().expect("clone");
        let start = Instant::now();
        // Honest clients start once the flood has had time to fill any queue, spread over the window
        // that leaves room for their retry.
        let window = flood_for.saturating_sub(Duration::from_secs(4));
        let first_at: Vec<Instant> = (0..honest.len())
            .map(|i| {
                start
                    + Duration::from_secs(2)
                    + window.mul_f64(i as f64 / honest.len().max(1) as f64)
            })
            .collect();
        let first_reply: Mutex<Vec<Option<Instant>>> = Mutex::new(vec![None; honest.len()]);
        std::thread::scope(|scope| {
            let flooder = scope.spawn(|| {
                let mut req = flood_req.clone();
                let mut sent = 0u64;
                let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
                while start.elapsed() < flood_for {
                    let due = (start.elapsed().as_secs_f64() * flood_rate) as u64;
                    while sent < due {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        req[4..8].copy_from_slice(&(rng as u32).to_be_bytes());
                        req[30..34].copy_from_slice(&((rng >> 32) as u32).to_be_bytes());
                        send_from(&sock, &req, CLIENT_V4);
                        sent += 1;
                    }
                    std::thread::sleep(Duration::from_micros(300));
                }
                sent
            });
            let receiver = scope.spawn(|| {
                let mut buf = [0u8; 2048];
                recv_sock
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let end = start + flood_for + Duration::from_secs(3);
                while Instant::now() < end {
                    let Ok(r) = recv_v4(recv_sock.as_fd(), &mut buf) else {
                        continue;
                    };
                    if r.len < 8 {
                        continue;
                    }
                    let now = Instant::now();
                    let at = r.kernel_age.and_then(|a| now.checked_sub(a)).unwrap_or(now);
                    let xid = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
                    let idx = (xid & 0x00ff_ffff) as usize;
                    // Only honest clients' replies matter (their xids start 0x4c).
                    if xid >> 24 != 0x4c {
                        continue;
                    }
                    if let Some(c) = honest.get(idx)
                        && verify_v4_reply(&buf[..r.len], c.xid, &c.mac, &c.secrets).is_ok()
                    {
                        let mut done = first_reply.lock().expect("lock");
                        if done[idx].is_none() {
                            done[idx] = Some(at);
                        }
                    }
                }
            });
            // The honest clients, driven from this thread: the first request, then a retry after 2 s
            // if no reply has come (a reply to either attempt unlocks, as for the firmware).
            let mut sent_at: Vec<Option<Instant>> = vec![None; honest.len()];
            let mut retried = 0usize;
            let mut pending: Vec<usize> = (0..honest.len()).collect();
            while !pending.is_empty() {
                let now = Instant::now();
                pending.retain(|&i| {
                    if now >= first_at[i] && sent_at[i].is_none() {
                        send_from(&sock, &honest[i].request, honest[i].addr);
                        sent_at[i] = Some(Instant::now());
                        return true;
                    }
                    if let Some(t) = sent_at[i]
                        && now >= t + RETRY_AFTER
                    {
                        if first_reply.lock().expect("lock")[i].is_none() {
                            send_from(&sock, &honest[i].request, honest[i].addr);
                            retried += 1;
                        }
                        return false;
                    }
                    true
                });
                std::thread::sleep(Duration::from_millis(5));
            }
            let flooded = flooder.join().expect("flooder");
            receiver.join().expect("receiver");
            let first_reply = first_reply.lock().expect("lock").clone();
            let mut latencies: Vec<Duration> = first_reply
                .iter()
                .zip(&sent_at)
                .filter_map(|(r, s)| Some(r.as_ref()?.saturating_duration_since(*s.as_ref()?)))
                .collect();
            latencies.sort();
            (flooded, latencies.len(), latencies, retried)
        })
    });
    // Let the last queued flood jobs finish, and the log summary of the burst be written, before
    // reading the counters.
    std::thread::sleep(Duration::from_secs(4));
    let counted: u64 = Outcome::ALL.iter().map(|o| server.count(*o)).sum();
    let sent = flooded + (honest.len() + retried) as u64;
    println!();
    println!(
        "| honest clients | unlocked | share | retries sent | p50 | p90 | max | flood sent | flood rate/s | answered (all) | rate limited | queue full | expired | requests sent | requests counted | per-request log lines | summary lines |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {unlocked} | {:.0} % | {retried} | {} | {} | {} | {flooded} | {:.0} | {} | {} | {} | {} | {sent} | {counted} | {} | {} |",
        honest.len(),
        100.0 * unlocked as f64 / honest.len() as f64,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(latencies.last().copied().unwrap_or_default()),
        flooded as f64 / flood_for.as_secs_f64(),
        server.count(Outcome::Answered),
        server.count(Outcome::RateLimited),
        server.count(Outcome::QueueFull),
        server.count(Outcome::Expired),
        LOG.per_request.load(Ordering::Relaxed),
        LOG.summaries.load(Ordering::Relaxed),
    );
    let share = unlocked as f64 / honest.len() as f64;
    println!();
    println!(
        "goal: ≥ 95 % of honest clients unlock while one host floods at ≥ 2 × capacity: {}",
        if share >= 0.95 { "met" } else { "NOT met" }
    );
    server.stop();
    if share < 0.95 {
        std::process::exit(1);
    }
}
