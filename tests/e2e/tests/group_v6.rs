//! Several appliances as one (issue 11), DHCPv6 through a relay to three members. The members start
//! while PostgreSQL is down (start-up never waits for it): they answer everything until it is up,
//! then share, exactly once; a kill -9 mid-storm loses no client past its retry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::group::{
    RATE, answered_now, assert_exactly_once_and_even, kill_mid_storm, require_group_rig,
    wait_health,
};
use crate::group_rig::{ESCROW_LISTEN, Fam, MEMBERS, Rig, boots, group_skip_reason, storm};
use crate::harness::metric;

const SETTLE: Duration = Duration::from_millis(1500);

#[test]
fn v6_group_starts_without_its_database_then_shares_once_and_survives_a_kill() {
    require_group_rig!();
    // The database is down at start: every member still becomes ready and answers every request,
    // the first one although its escrow service uses the same database (it waits in the background).
    let mut rig = Rig::start_full(Fam::V6, false, MEMBERS, true, true);
    rig.wait_degraded(Duration::from_secs(5));
    let h = wait_health(&rig, 2, "\"degraded\"");
    assert!(h.contains(" 200 "), "{h}");
    let sock = rig.client_socket();
    let dest = rig.destination();
    let tally = storm(
        &sock,
        dest,
        &boots(Fam::V6, &rig.cert, 1, 150),
        RATE,
        false,
        SETTLE,
        |_| {},
    );
    let (bad, examples) = tally.not_exactly(3);
    assert_eq!(
        bad,
        0,
        "without the database all three answer: {examples:?}\n{}",
        rig.logs()
    );

    // The database comes up: sharing starts, each of 3,000 clients answered exactly once.
    rig.pg.start();
    rig.wait_sharing(3, Duration::from_secs(10));
    // The escrow service follows once its database answers (it retries every 5 s).
    let first = rig.daemons[0].as_ref().unwrap();
    assert!(
        first.wait_for_log(&["escrow service started"], Duration::from_secs(15)),
        "{}",
        rig.logs()
    );
    let escrow: std::net::SocketAddr = ESCROW_LISTEN.parse().unwrap();
    rig.servers[0].enter(move || {
        std::net::TcpStream::connect_timeout(&escrow, Duration::from_secs(3))
            .expect("the escrow API listens once its database is up")
    });
    let before = answered_now(&rig);
    let clients = boots(Fam::V6, &rig.cert, 1_001, 3000);
    let tally = storm(&sock, dest, &clients, RATE, false, SETTLE, |_| {});
    assert_exactly_once_and_even(&rig, &tally, &before, "v6 storm of 3000");
    // The member whose escrow service started late still records its unlock outcomes there.
    let answered_by_first = rig.answered(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let written = loop {
        let written = metric(&rig.metrics(0), "netunlockd_unlock_records_written_total");
        if written >= answered_by_first || std::time::Instant::now() > deadline {
            break written;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        written >= answered_by_first,
        "{written} unlock records written for {answered_by_first} answers\n{}",
        rig.logs()
    );
    drop(sock);

    kill_mid_storm(&mut rig, 10_001, 900);
}
