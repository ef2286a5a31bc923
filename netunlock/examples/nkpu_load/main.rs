//! Load tool for the Network Unlock responder (a benchmark, not a test; needs root for its network
//! namespaces).
//!
//! Runs the real `Responder` in-process in one network namespace and its clients in another, joined by
//! a veth pair, so every client has its own on-link address (the responder answers a direct request
//! only from the address it claims). Three scenarios:
//!
//! * `storm` (default): a burst of distinct clients, each one request; replies per second, latency
//!   percentiles, replies later than 2 s (must be 0) and drops, with one worker per core and with a
//!   single worker, next to the raw RSA-2048 PKCS#1 v1.5 decryption rate measured in the same run.
//! * `flood`: one host floods at `--factor` × the measured RSA capacity with a new MAC on every packet
//!   while `--honest` clients on other addresses each send one request and retry after 2 s as Windows
//!   does; prints the share of honest clients unlocked (goal ≥ 95 %) and what the flood cost.
//! * `timing`: key protectors of four classes (valid, forged, wrong length, out of range) sent one at a
//!   time, interleaved; round-trip median, trimmed mean and Welch's t against valid, over the network.
//!
//! ```text
//! cargo run --release -p netunlock --example nkpu_load -- [storm] [--clients 10000] [--rate 0] [--workers 0,1]
//! cargo run --release -p netunlock --example nkpu_load -- flood [--honest 50] [--factor 2.5] [--seconds 8] [--workers 0]
//! cargo run --release -p netunlock --example nkpu_load -- timing [--samples 500]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/common/netns.rs"]
mod netns;
#[path = "../../benches/common/stats.rs"]
mod stats;

mod flood;
mod logcount;
mod rig;
mod storm;
mod timing;

pub(crate) struct Args {
    scenario: String,
    clients: usize,
    rate: u64,
    workers: Vec<usize>,
    honest: usize,
    factor: f64,
    seconds: u64,
    samples: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        scenario: "storm".into(),
        clients: 10_000,
        rate: 0,
        workers: vec![0, 1],
        honest: 50,
        factor: 2.5,
        seconds: 8,
        samples: 500,
    };
    let mut workers_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "storm" | "flood" | "timing" => a.scenario = flag.clone(),
            "--clients" => a.clients = value().parse().expect("--clients N"),
            "--rate" => a.rate = value().parse().expect("--rate N"),
            "--honest" => a.honest = value().parse().expect("--honest N"),
            "--factor" => a.factor = value().parse().expect("--factor X"),
            "--seconds" => a.seconds = value().parse().expect("--seconds N"),
            "--samples" => a.samples = value().parse().expect("--samples N"),
            "--workers" => {
                workers_given = true;
                a.workers = value()
                    .split(',')
                    .map(|w| w.parse().expect("--workers 0,1"))
                    .collect()
            }
            other => panic!("unknown argument {other}; see the file header for usage"),
        }
    }
    if !workers_given && a.scenario != "storm" {
        a.workers = vec![0];
    }
    // Bounded: this is a benchmark between two namespaces of this machine, not a flood tool.
    a.clients = a.clients.clamp(1, 60_000);
    a.honest = a.honest.clamp(1, 250);
    a.factor = a.factor.clamp(0.1, 10.0);
    a.seconds = a.seconds.clamp(4, 60);
    a.samples = a.samples.clamp(10, 20_000);
    a
}

fn main() {
    let args = parse_args();
    if let Some(reason) = netns::skip_reason() {
        eprintln!("nkpu_load needs its own network namespaces: {reason}");
        std::process::exit(2);
    }
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    match args.scenario.as_str() {
        "flood" => flood::run(&args),
        "timing" => timing::run(&args),
        _ => storm::run(&args),
    }
    println!(
        "load average at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
