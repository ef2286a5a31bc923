//! The DHCPv6 request parser, including Relay-Forward messages nested up to the depth limit: any
//! datagram either parses or is refused with `NotNkpu`, never a panic; whatever parses can be
//! answered (one Relay-Reply per hop) without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netunlock::{KPR_LEN, v6};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = v6::parse_request(data) {
        assert!(
            req.relay_hops.len() <= v6::MAX_RELAY_DEPTH,
            "relay depth limit ignored"
        );
        let _ = req.client_duid_hex();
        let _ = req.innermost_peer();
        let _ = req.client_link();
        let duid = v6::duid_llt(0, [2, 0, 0, 0, 0, 1]);
        let _ = v6::build_reply(&req, &duid, &[0x5a; KPR_LEN]);
    }
});
