//! What one member knows of its group at a moment, and the ownership decision made from it. Pure:
//! the engine builds a new view after each heartbeat and swaps it in; the receive loop only reads.

use std::time::Duration;

use super::hrw;

/// How this member decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No heartbeat has succeeded yet: answer everything (unlock availability beats efficiency).
    Starting,
    /// Sharing: answer the clients the hash gives this member among the live members.
    Sharing,
    /// The database cannot be reached: answer everything until it can again.
    Degraded,
}

/// The decision for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    NotMine,
    Mine,
    /// Mine only because the member that would own it is dead (a takeover).
    MineForDeadPeer,
}

/// A member row as the engine hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) member_id: String,
    pub(crate) silent_for: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) me: String,
    pub(crate) mode: Mode,
    /// Live members, sorted, always including this one.
    pub(crate) live: Vec<String>,
    /// Members with a row but no heartbeat for `dead_after`, sorted.
    pub(crate) dead: Vec<String>,
}

impl View {
    pub(crate) fn starting(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            mode: Mode::Starting,
            live: vec![me.to_owned()],
            dead: Vec::new(),
        }
    }

    /// The view after a successful heartbeat. This member is live whatever its row says (it just
    /// wrote it); a member silent for `dead_after` or longer is dead.
    pub(crate) fn sharing(me: &str, rows: &[Seen], dead_after: Duration) -> Self {
        let mut live = vec![me.to_owned()];
        let mut dead = Vec::new();
        for r in rows.iter().filter(|r| r.member_id != me) {
            if r.silent_for < dead_after {
                live.push(r.member_id.clone());
            } else {
                dead.push(r.member_id.clone());
            }
        }
        live.sort();
        dead.sort();
        Self {
            me: me.to_owned(),
            mode: Mode::Sharing,
            live,
            dead,
        }
    }

    /// The same membership, answering everything because the database is out of reach.
    pub(crate) fn degraded(&self) -> Self {
        Self {
            mode: Mode::Degraded,
            ..self.clone()
        }
    }

    /// Whether this member answers the client with `key` (see [`hrw::client_key`]).
    pub(crate) fn decide(&self, key: &[u8]) -> Decision {
        if self.mode != Mode::Sharing {
            return Decision::Mine;
        }
        if hrw::owner(self.live.iter().map(String::as_str), key) != Some(self.me.as_str()) {
            return Decision::NotMine;
        }
        if self.dead.is_empty() {
            return Decision::Mine;
        }
        // Would a dead member have had it? Then this answer is a takeover.
        let everyone = self.live.iter().chain(&self.dead).map(String::as_str);
        if hrw::owner(everyone, key) == Some(self.me.as_str()) {
            Decision::Mine
        } else {
            Decision::MineForDeadPeer
        }
    }

    /// The fraction of clients this member is expected to answer.
    pub(crate) fn share(&self) -> f64 {
        match self.mode {
            Mode::Sharing => 1.0 / self.live.len().max(1) as f64,
            Mode::Starting | Mode::Degraded => 1.0,
        }
    }

    /// Members that were live here and are dead (or gone) in `next`: each is a takeover.
    pub(crate) fn departed_in<'a>(&'a self, next: &'a Self) -> impl Iterator<Item = &'a str> + 'a {
        self.live
            .iter()
            .filter(move |m| !next.live.contains(m))
            .map(String::as_str)
    }

    /// Members live in `next` that were not live here.
    pub(crate) fn joined_in<'a>(&'a self, next: &'a Self) -> impl Iterator<Item = &'a str> + 'a {
        next.live
            .iter()
            .filter(move |m| !self.live.contains(m))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn seen(id: &str, ms: u64) -> Seen {
        Seen {
            member_id: id.into(),
            silent_for: Duration::from_millis(ms),
        }
    }

    const DEAD: Duration = Duration::from_secs(3);

    fn key(i: u32) -> Vec<u8> {
        hrw::client_key(4, &i.to_be_bytes())
    }

    #[test]
    fn rows_are_split_into_live_and_dead_and_self_is_always_live() {
        let v = View::sharing(
            "b",
            &[seen("c", 2999), seen("a", 3000), seen("b", 9_999_999)],
            DEAD,
        );
        assert_eq!(v.live, ["b", "c"]);
        assert_eq!(v.dead, ["a"]);
        assert_eq!(v.mode, Mode::Sharing);
        assert!((v.share() - 0.5).abs() < 1e-9);
        // Before the first heartbeat, and without the database: everything is ours.
        let s = View::starting("b");
        let d = v.degraded();
        for i in 0..100 {
            assert_eq!(s.decide(&key(i)), Decision::Mine);
            assert_eq!(d.decide(&key(i)), Decision::Mine);
        }
        assert!((d.share() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn exactly_one_member_answers_each_client() {
        let rows = [seen("nu-1", 10), seen("nu-2", 900), seen("nu-3", 0)];
        let views: Vec<View> = ["nu-1", "nu-2", "nu-3"]
            .iter()
            .map(|me| View::sharing(me, &rows, DEAD))
            .collect();
        for i in 0..3000 {
            let answering = views
                .iter()
                .filter(|v| v.decide(&key(i)) != Decision::NotMine)
                .count();
            assert_eq!(answering, 1, "client {i}");
        }
    }

    #[test]
    fn survivors_take_the_dead_members_clients_and_count_them_as_takeovers() {
        let rows = [seen("nu-1", 10), seen("nu-2", 4000), seen("nu-3", 0)];
        let views: Vec<View> = ["nu-1", "nu-3"]
            .iter()
            .map(|me| View::sharing(me, &rows, DEAD))
            .collect();
        let all = ["nu-1", "nu-2", "nu-3"];
        let mut for_dead = 0;
        for i in 0..3000 {
            let k = key(i);
            let decisions: Vec<Decision> = views.iter().map(|v| v.decide(&k)).collect();
            assert_eq!(
                decisions
                    .iter()
                    .filter(|d| **d != Decision::NotMine)
                    .count(),
                1,
                "client {i}"
            );
            let was_dead_peers = hrw::owner(all.iter().copied(), &k) == Some("nu-2");
            assert_eq!(
                decisions.contains(&Decision::MineForDeadPeer),
                was_dead_peers,
                "client {i}"
            );
            for_dead += usize::from(was_dead_peers);
        }
        assert!((800..=1200).contains(&for_dead), "{for_dead}");
    }

    #[test]
    fn departures_and_arrivals_between_views() {
        let before = View::sharing("a", &[seen("b", 0), seen("c", 0)], DEAD);
        let after = View::sharing("a", &[seen("b", 5000), seen("d", 0)], DEAD);
        assert_eq!(before.departed_in(&after).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(before.joined_in(&after).collect::<Vec<_>>(), ["d"]);
    }
}
