//! Load tool for a Network Unlock group (issue 11; a benchmark, not a test; needs root, `dhcrelay`
//! and PostgreSQL server binaries). Runs the real `netunlockd` members behind the real ISC relay,
//! exactly as the group end-to-end tests do, and replays one boot storm against:
//!
//! * `n` independent appliances (no `[unlock.group]`): what a relay with several helper addresses
//!   does today — every appliance answers every request;
//! * groups of 1, 2 and 3 members sharing one PostgreSQL.
//!
//! For each it prints replies per client, RSA decryptions per request across all members
//! (the sum of the members' `answered` counters: each answered request is one decryption), each
//! member's share of the work and CPU time, and the clients answered. Then the raw RSA-2048
//! decryption rate of one core and the members' CPU per answered request: the per-core figure for
//! sizing (docs/scale-out.md).
//!
//! ```text
//! cargo build --release -p netunlockd
//! cargo build --release -p netunlockd-e2e --example group_load
//! target/release/examples/group_load [--clients 3000] [--rate 600]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/group_rig.rs"]
mod group_rig;
#[path = "../tests/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use group_rig::{Fam, Rig, boots, group_skip_reason, storm};
use harness::metric;

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.parse().unwrap_or_else(|_| panic!("{name} N"))
        })
}

struct Row {
    label: String,
    answered: Vec<f64>,
    replies_per_client: f64,
    unanswered: usize,
    decryptions_per_request: f64,
    shares: Vec<f64>,
    cpu: Vec<f64>,
}

fn scenario(members: usize, group: bool, clients: u32, rate: u32) -> Row {
    let rig = Rig::start_with(Fam::V4, true, members, group);
    if group {
        rig.wait_sharing(members, Duration::from_secs(20));
    } else {
        std::thread::sleep(Duration::from_millis(500));
    }
    let before: Vec<(f64, f64)> = (0..members).map(|k| sample(&rig, k)).collect();
    let sock = rig.client_socket();
    let tally = storm(
        &sock,
        rig.destination(),
        &boots(Fam::V4, &rig.cert, 1, clients),
        rate,
        false,
        Duration::from_millis(2500),
        |_| {},
    );
    let after: Vec<(f64, f64)> = (0..members).map(|k| sample(&rig, k)).collect();
    let answered: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).collect();
    let cpu: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a.1 - b.1).collect();
    let total: f64 = answered.iter().sum();
    let replies: u32 = tally.replies.iter().sum();
    Row {
        answered: answered.clone(),
        label: if group {
            format!("group of {members}")
        } else {
            format!("{members} independent appliances")
        },
        replies_per_client: f64::from(replies) / f64::from(clients),
        unanswered: tally.unanswered(),
        decryptions_per_request: total / f64::from(clients),
        shares: answered.iter().map(|a| a / total.max(1.0)).collect(),
        cpu,
    }
}

/// (answered v4 requests, CPU seconds) of member `k`. CPU from /proc (10 ms resolution; the
/// process metric rounds to whole seconds).
fn sample(rig: &Rig, k: usize) -> (f64, f64) {
    let t = rig.metrics(k);
    let pid = rig.daemons[k].as_ref().map_or(0, harness::Daemon::pid);
    (
        metric(
            &t,
            r#"netunlockd_requests_total{family="v4",outcome="answered"}"#,
        ),
        cpu_seconds(pid),
    )
}

fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // USER_HZ, the unit of these fields, is 100 on every Linux architecture.
    f.iter().sum::<f64>() / 100.0
}

/// Raw RSA-2048 PKCS#1 v1.5 decryptions on one thread (aws-lc-rs, as the responder uses): per
/// wall-clock second and per CPU-second.
fn raw_rsa_one_core() -> (f64, f64) {
    use aws_lc_rs::rsa::{
        KeySize, Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey, PrivateDecryptingKey,
    };
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let public = Pkcs1PublicEncryptingKey::new(key.public_key()).unwrap();
    let key = Pkcs1PrivateDecryptingKey::new(key).unwrap();
    let mut ct = [0u8; 256];
    public.encrypt(&[7u8; 64], &mut ct).unwrap();
    let mut out = [0u8; 256];
    let start = Instant::now();
    let cpu_start = thread_cpu();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(3) {
        key.decrypt(&ct, &mut out).unwrap();
        n += 1;
    }
    (
        f64::from(n) / start.elapsed().as_secs_f64(),
        f64::from(n) / (thread_cpu() - cpu_start).max(1e-9),
    )
}

/// CPU seconds this thread has used: on a loaded machine the wall-clock rate understates a core.
fn thread_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    use nix::sys::time::TimeValLike;
    let u = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
    (u.user_time().num_microseconds() + u.system_time().num_microseconds()) as f64 / 1e6
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn main() {
    if let Some(reason) = group_skip_reason() {
        eprintln!("group_load cannot run here: {reason}");
        std::process::exit(2);
    }
    let clients = arg("--clients", 3000).clamp(10, 20_000);
    let rate = arg("--rate", 600).clamp(10, 5000);
    println!("load average at start: {}", loadavg());
    println!(
        "storm: {clients} distinct DHCPv4 clients at {rate} requests/s through one ISC dhcrelay forwarding to every member"
    );
    let rows = vec![
        scenario(3, false, clients, rate),
        scenario(1, true, clients, rate),
        scenario(2, true, clients, rate),
        scenario(3, true, clients, rate),
    ];
    println!();
    println!(
        "| set-up | replies per client | unanswered | RSA decryptions per request | requests answered per member (share) | CPU seconds per member | answered per CPU-second |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut cpu_total = 0.0;
    let mut answered_total = 0.0;
    for r in &rows {
        let shares: Vec<String> = r
            .answered
            .iter()
            .zip(&r.shares)
            .map(|(a, s)| format!("{a:.0} ({:.1} %)", 100.0 * s))
            .collect();
        let cpu: Vec<String> = r.cpu.iter().map(|c| format!("{c:.2}")).collect();
        let (answered, spent) = (r.answered.iter().sum::<f64>(), r.cpu.iter().sum::<f64>());
        println!(
            "| {} | {:.2} | {} | {:.2} | {} | {} | {:.0} |",
            r.label,
            r.replies_per_client,
            r.unanswered,
            r.decryptions_per_request,
            shares.join(" / "),
            cpu.join(" / "),
            answered / spent.max(1e-9)
        );
        cpu_total += spent;
        answered_total += answered;
    }
    let (raw_wall, raw_cpu) = raw_rsa_one_core();
    println!();
    println!(
        "raw RSA-2048 decryptions on one thread (aws-lc-rs): {raw_wall:.0} per wall-clock second, {raw_cpu:.0} per CPU-second"
    );
    println!(
        "members' CPU per answered request, all scenarios: {:.3} ms (= {:.0} answered requests per CPU-second; receive loops, relayed requests that were not theirs and heartbeats included)",
        1000.0 * cpu_total / answered_total.max(1.0),
        answered_total / cpu_total.max(1e-9)
    );
    println!("load average at end: {}", loadavg());
}
