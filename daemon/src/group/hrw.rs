//! Rendezvous (highest-random-weight) hashing: which live member answers a client. Every member
//! scores `SHA-256(member ‖ 0x00 ‖ client key)` for each live member and the highest score wins, so
//! members that see the same membership agree without talking to each other, and a departed
//! member's clients (only those) move to the others. Pure; no state.

use aws_lc_rs::digest;

/// The client key hashed: a family tag and the client's identifier (MAC for v4, DUID for v6), so a
/// MAC and a DUID with the same bytes are different clients.
pub(crate) fn client_key(tag: u8, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 1);
    key.push(tag);
    key.extend_from_slice(id);
    key
}

/// The weight of `member` for `key`: the first 8 bytes of the SHA-256 of the member id, a zero
/// separator (member ids never contain NUL: the configuration refuses it) and the key.
pub(crate) fn score(member: &str, key: &[u8]) -> u64 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(member.as_bytes());
    ctx.update(&[0]);
    ctx.update(key);
    let d = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// The member that answers `key`, or None for an empty membership. Ties (astronomically unlikely)
/// go to the smaller member id so every member still agrees.
pub(crate) fn owner<'a, I>(members: I, key: &[u8]) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    members
        .into_iter()
        .map(|m| (score(m, key), m))
        .max_by(|(sa, ma), (sb, mb)| sa.cmp(sb).then_with(|| mb.cmp(ma)))
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::collections::HashMap;

    fn mac(i: u32) -> Vec<u8> {
        let b = i.to_be_bytes();
        client_key(4, &[0x02, 0x00, b[0], b[1], b[2], b[3]])
    }

    fn shares(members: &[&str], clients: u32) -> HashMap<String, u32> {
        let mut out = HashMap::new();
        for i in 0..clients {
            let o = owner(members.iter().copied(), &mac(i)).unwrap();
            *out.entry(o.to_owned()).or_insert(0) += 1;
        }
        out
    }

    #[test]
    fn known_answers_pin_the_hash_for_every_build_and_version() {
        // Members of one group may run different releases during an upgrade: the score must never
        // change, or two members would answer (or none would) until all run the same build.
        assert_eq!(score("a", &client_key(4, &[1, 2, 3, 4, 5, 6])), {
            let d = digest::digest(&digest::SHA256, b"a\0\x04\x01\x02\x03\x04\x05\x06");
            u64::from_be_bytes(d.as_ref()[..8].try_into().unwrap())
        });
        // Computed independently (Python hashlib) from the definition in the module docs.
        let table: &[(&[&str], &[u8], &str)] = &[
            (
                &["nu1", "nu2", "nu3"],
                b"\x04\x02\x00\x00\x00\x00\x01",
                "nu1",
            ),
            (&["nu1", "nu2", "nu3"], b"\x06\x00\x01\x00\x01", "nu2"),
            (&["only"], b"\x06\x00\x01", "only"),
        ];
        for (members, key, expected) in table {
            assert_eq!(owner(members.iter().copied(), key), Some(*expected));
            // The order of the membership list does not matter.
            let mut rev: Vec<&str> = members.to_vec();
            rev.reverse();
            assert_eq!(owner(rev.iter().copied(), key), Some(*expected));
        }
        assert_eq!(
            score("nu1", b"\x04\x02\x00\x00\x00\x00\x01"),
            14_280_768_644_918_156_570
        );
        assert_eq!(owner(std::iter::empty(), b"x"), None);
    }

    #[test]
    fn shares_are_even_within_ten_percent_for_three_thousand_clients() {
        for members in [
            &["appliance-a", "appliance-b"][..],
            &["nu-1", "nu-2", "nu-3"][..],
            &["m1", "m2", "m3", "m4", "m5"][..],
        ] {
            let s = shares(members, 3000);
            let even = 3000.0 / members.len() as f64;
            for m in members.iter() {
                let got = f64::from(s.get(*m).copied().unwrap_or(0));
                assert!(
                    (got - even).abs() <= 0.1 * even,
                    "{m}: {got} of 3000 with {} members ({s:?})",
                    members.len()
                );
            }
        }
    }

    #[test]
    fn a_departure_moves_only_the_departed_members_clients() {
        let all = ["nu-1", "nu-2", "nu-3"];
        let left = ["nu-1", "nu-3"];
        for i in 0..3000 {
            let k = mac(i);
            let before = owner(all.iter().copied(), &k).unwrap();
            let after = owner(left.iter().copied(), &k).unwrap();
            if before != "nu-2" {
                assert_eq!(before, after, "client {i} moved although its owner stayed");
            }
        }
    }

    #[test]
    fn a_newcomer_takes_about_its_share_and_only_from_others() {
        let before = ["nu-1", "nu-2", "nu-3"];
        let after = ["nu-1", "nu-2", "nu-3", "nu-4"];
        let mut moved = 0;
        for i in 0..3000 {
            let k = mac(i);
            let (b, a) = (
                owner(before.iter().copied(), &k).unwrap(),
                owner(after.iter().copied(), &k).unwrap(),
            );
            if a != b {
                assert_eq!(a, "nu-4", "a client moved between old members");
                moved += 1;
            }
        }
        assert!(
            (600..=900).contains(&moved),
            "{moved} of 3000 moved to the newcomer"
        );
    }

    #[test]
    fn the_family_tag_separates_a_mac_from_a_duid_with_the_same_bytes() {
        assert_ne!(client_key(4, &[1, 2]), client_key(6, &[1, 2]));
        assert_ne!(
            score("m", &client_key(4, &[1, 2])),
            score("m", &client_key(6, &[1, 2]))
        );
    }
}
