//! The DHCPv4 request parser (direct and relayed, option overload, RFC 3396 concatenation): any
//! datagram either parses or is refused with `NotNkpu` (the responder's silence), never a panic;
//! whatever parses can be answered without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netunlock::{KPR_LEN, v4};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = v4::parse_request(data) {
        let _ = req.mac();
        let _ = req.nkpu.thumbprint_hex();
        if let Ok(reply) = v4::build_reply(&req, &[0x5a; KPR_LEN]) {
            assert!(reply.len() >= v4::V4_REPLY_LEN, "short reply");
        }
    }
});
