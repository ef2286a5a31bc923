//! Several appliances as one (issue 11), DHCPv4: three members behind one relay that forwards every
//! request to all three, one PostgreSQL. Each request is answered exactly once and the work is
//! shared evenly; a member killed mid-storm loses no client past its retry; without the database
//! every member answers, and sharing resumes when it is back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::group_rig::{Fam, Rig, Tally, boots, group_skip_reason, storm};
use crate::harness::metric;

macro_rules! require_group_rig {
    () => {
        if let Some(reason) = group_skip_reason() {
            println!("SKIP: {reason}");
            return;
        }
    };
}
pub(crate) use require_group_rig;

/// Storm rate: the three members together decrypt it comfortably on a shared 2-core machine.
pub const RATE: u32 = 600;
const SETTLE: Duration = Duration::from_millis(1500);

/// Every client answered exactly once, and each live member's share within ±10 % of even.
pub fn assert_exactly_once_and_even(rig: &Rig, tally: &Tally, before: &[f64], what: &str) {
    let (bad, examples) = tally.not_exactly(1);
    assert_eq!(
        bad,
        0,
        "{what}: {bad} of {} clients not answered exactly once (client, replies): {examples:?}\n{}",
        tally.replies.len(),
        rig.logs()
    );
    assert_eq!(tally.invalid, 0, "{what}: replies that do not verify");
    let alive = rig.alive();
    let even = tally.replies.len() as f64 / alive.len() as f64;
    let shares: Vec<f64> = alive
        .iter()
        .map(|k| rig.answered(*k) - before[*k])
        .collect();
    println!(
        "{what}: shares {shares:?} of {} (even {even:.0})",
        tally.replies.len()
    );
    for (k, got) in alive.iter().zip(&shares) {
        assert!(
            (got - even).abs() <= 0.10 * even,
            "{what}: member {} answered {got}, even is {even:.0} ({shares:?})",
            Rig::member_id(*k)
        );
    }
}

pub fn answered_now(rig: &Rig) -> Vec<f64> {
    (0..rig.n)
        .map(|k| {
            if rig.daemons[k].is_some() {
                rig.answered(k)
            } else {
                0.0
            }
        })
        .collect()
}

/// A kill -9 in the middle of a storm: every client is unlocked by its second try (the survivors
/// take the dead member's share within dead_after + one heartbeat).
pub fn kill_mid_storm(rig: &mut Rig, first: u32, n: u32) {
    let sock = rig.client_socket();
    let dest = rig.destination();
    let clients = boots(rig.fam, &rig.cert, first, n);
    let victim = 1;
    let mut killed_at = None;
    let tally = storm(&sock, dest, &clients, RATE, true, SETTLE, |i| {
        if i == clients.len() / 3 {
            rig.kill9(victim);
            killed_at = Some(Instant::now());
        }
    });
    println!(
        "kill -9 mid-storm: {} clients, {} retried, {} unanswered",
        tally.replies.len(),
        tally.retried,
        tally.unanswered()
    );
    assert!(killed_at.is_some());
    assert_eq!(
        tally.unanswered(),
        0,
        "clients still locked after their second try\n{}",
        rig.logs()
    );
    assert!(
        tally.retried > 0,
        "the kill did not cost anyone a first try: the test proves nothing"
    );
    for k in rig.alive() {
        let t = rig.metrics(k);
        assert!(metric(&t, "netunlockd_group_takeovers_total") >= 1.0, "{t}");
        assert!(
            metric(&t, "netunlockd_group_dead_peer_requests_total") >= 1.0,
            "{t}"
        );
        assert_eq!(metric(&t, "netunlockd_group_members"), 2.0, "{t}");
        assert_eq!(metric(&t, "netunlockd_group_dead_members"), 1.0, "{t}");
    }
}

/// Fetches /healthz in a member's namespace.
pub fn healthz(rig: &Rig, k: usize) -> String {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = crate::harness::METRICS.parse().unwrap();
    rig.servers[k].enter(move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(s, "GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    })
}

/// Waits (health refreshes every 5 s) until a member's /healthz contains `needle`.
pub fn wait_health(rig: &Rig, k: usize, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let h = healthz(rig, k);
        if h.contains(needle) || Instant::now() > deadline {
            return h;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn v4_group_answers_once_shares_evenly_survives_a_kill_and_the_database() {
    require_group_rig!();
    let mut rig = Rig::start(Fam::V4, true);
    rig.wait_sharing(3, Duration::from_secs(20));

    // 3,000 clients: each answered exactly once, shares within ±10 %.
    let sock = rig.client_socket();
    let dest = rig.destination();
    let before = answered_now(&rig);
    let clients = boots(Fam::V4, &rig.cert, 1, 3000);
    let tally = storm(&sock, dest, &clients, RATE, false, SETTLE, |_| {});
    assert_exactly_once_and_even(&rig, &tally, &before, "v4 storm of 3000");
    drop(sock);

    // kill -9 one member mid-storm: everyone unlocked by the second try.
    kill_mid_storm(&mut rig, 10_001, 900);

    // Stop PostgreSQL: the survivors both answer everything, and say so.
    rig.pg.stop();
    rig.wait_degraded(Duration::from_secs(5));
    let h = wait_health(&rig, 0, "\"degraded\"");
    assert!(
        h.contains(" 200 ") && h.contains("group database unreachable"),
        "{h}"
    );
    let sock = rig.client_socket();
    let tally = storm(
        &sock,
        dest,
        &boots(Fam::V4, &rig.cert, 20_001, 200),
        RATE,
        false,
        SETTLE,
        |_| {},
    );
    let (bad, examples) = tally.not_exactly(2);
    assert_eq!(
        bad,
        0,
        "without the database both survivors answer: {examples:?}\n{}",
        rig.logs()
    );

    // Start it again: sharing resumes, exactly once.
    rig.pg.start();
    rig.wait_sharing(2, Duration::from_secs(10));
    assert!(
        rig.daemons[0]
            .as_ref()
            .unwrap()
            .wait_for_log(&["group database reachable again"], Duration::from_secs(1))
    );
    let before = answered_now(&rig);
    let tally = storm(
        &sock,
        dest,
        &boots(Fam::V4, &rig.cert, 30_001, 600),
        RATE,
        false,
        SETTLE,
        |_| {},
    );
    assert_exactly_once_and_even(&rig, &tally, &before, "v4 after the database came back");
}
