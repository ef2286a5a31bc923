//! The queue between the receive loops (which never do RSA) and the worker threads: fair across
//! sources, and fair across clients inside a source.
//!
//! Each source (a host, or a trusted relay) has its own queue, holding at most `per_source_cap`
//! requests times its weight (a relay's weight is its `relay_share`); a source that reaches its cap
//! has its new requests refused (`queue_full`) while everyone else still gets in. Workers take
//! sources in turn, weighted (deficit round robin with one RSA operation as the unit of cost), and
//! inside a source take its clients in turn. A flooding source therefore only delays itself.
//! The total stays bounded by `capacity`.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Why a push was refused; the item is handed back.
#[derive(Debug)]
pub enum PushError<T> {
    /// This source's share, or the whole queue, is full.
    Full(T),
    Closed(T),
}

#[derive(Debug)]
struct Flow<C, T> {
    weight: u32,
    deficit: u32,
    len: usize,
    clients: HashMap<C, VecDeque<T>>,
    /// Clients with queued items, in turn order.
    turn: VecDeque<C>,
}

impl<C: Hash + Eq + Clone, T> Flow<C, T> {
    fn new(weight: u32) -> Self {
        Self {
            weight: weight.max(1),
            deficit: 0,
            len: 0,
            clients: HashMap::new(),
            turn: VecDeque::new(),
        }
    }

    fn push(&mut self, client: C, item: T) {
        let q = self.clients.entry(client.clone()).or_default();
        if q.is_empty() {
            self.turn.push_back(client);
        }
        q.push_back(item);
        self.len += 1;
    }

    /// The next item, taking clients in turn.
    fn pop(&mut self) -> Option<T> {
        let client = self.turn.pop_front()?;
        let q = self.clients.get_mut(&client)?;
        let item = q.pop_front();
        if q.is_empty() {
            self.clients.remove(&client);
        } else {
            self.turn.push_back(client);
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }
}

#[derive(Debug)]
struct State<S, C, T> {
    flows: HashMap<S, Flow<C, T>>,
    /// Sources with queued items, in turn order.
    active: VecDeque<S>,
    len: usize,
    closed: bool,
}

/// A multi-producer, multi-consumer bounded queue with weighted fair turns across sources `S` and
/// plain turns across clients `C` inside each source.
#[derive(Debug)]
pub struct FairQueue<S, C, T> {
    state: Mutex<State<S, C, T>>,
    ready: Condvar,
    capacity: usize,
    per_source_cap: usize,
}

impl<S: Hash + Eq + Clone, C: Hash + Eq + Clone, T> FairQueue<S, C, T> {
    pub fn new(capacity: usize, per_source_cap: usize) -> Self {
        Self {
            state: Mutex::new(State {
                flows: HashMap::new(),
                active: VecDeque::new(),
                len: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            per_source_cap: per_source_cap.max(1),
        }
    }

    // A worker that panicked while holding the lock leaves consistent maps behind; keep going.
    fn lock(&self) -> MutexGuard<'_, State<S, C, T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `item` for `client` of `source` (weight: its share, 1 for a host). Returns the new depth.
    pub fn push(&self, source: S, weight: u32, client: C, item: T) -> Result<usize, PushError<T>> {
        let mut g = self.lock();
        if g.closed {
            return Err(PushError::Closed(item));
        }
        if g.len >= self.capacity {
            return Err(PushError::Full(item));
        }
        let cap = self
            .per_source_cap
            .saturating_mul(usize::try_from(weight.max(1)).unwrap_or(usize::MAX));
        let st = &mut *g;
        let flow = st
            .flows
            .entry(source.clone())
            .or_insert_with(|| Flow::new(weight));
        if flow.len >= cap {
            return Err(PushError::Full(item));
        }
        if flow.len == 0 {
            st.active.push_back(source);
        }
        flow.push(client, item);
        st.len += 1;
        let depth = st.len;
        drop(g);
        self.ready.notify_one();
        Ok(depth)
    }

    /// The next item in fair order, without waiting.
    fn take(st: &mut State<S, C, T>) -> Option<T> {
        loop {
            let source = st.active.front()?.clone();
            let Some(flow) = st.flows.get_mut(&source) else {
                st.active.pop_front();
                continue;
            };
            if flow.deficit == 0 {
                flow.deficit = flow.weight;
            }
            let item = flow.pop();
            flow.deficit = flow.deficit.saturating_sub(1);
            if flow.len == 0 {
                st.flows.remove(&source);
                st.active.pop_front();
            } else if flow.deficit == 0 {
                st.active.rotate_left(1);
            }
            if let Some(item) = item {
                st.len -= 1;
                return Some(item);
            }
        }
    }

    /// Waits for the next item. Returns None once the queue is closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut g = self.lock();
        loop {
            if let Some(item) = Self::take(&mut g) {
                return Some(item);
            }
            if g.closed {
                return None;
            }
            g = self.ready.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Stops accepting new items; workers drain what is queued, then see None.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request that waited longer than `max_age` must not be answered: the client has already given up
/// (or retransmitted) and a late answer only costs RSA work during a storm.
pub fn is_expired(received: Instant, now: Instant, max_age: Duration) -> bool {
    now.saturating_duration_since(received) > max_age
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    type Q = FairQueue<&'static str, u32, (&'static str, u32)>;

    fn drain(q: &Q) -> Vec<(&'static str, u32)> {
        q.close();
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn a_flooding_source_only_delays_itself() {
        let q: Q = FairQueue::new(1000, 8);
        let mut refused = 0;
        for i in 0..100 {
            if q.push("flood", 1, i, ("flood", i)).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 92, "the flooder keeps at most its cap");
        q.push("honest", 1, 0, ("honest", 0)).unwrap();
        let order = drain(&q);
        let pos = order.iter().position(|x| x.0 == "honest").unwrap();
        assert!(
            pos <= 1,
            "the honest request is served in the first turn: {order:?}"
        );
    }

    #[test]
    fn sources_are_served_in_turn_by_weight() {
        let q: Q = FairQueue::new(1000, 100);
        for i in 0..6 {
            q.push("a", 1, i, ("a", i)).unwrap();
            q.push("relay", 3, i, ("relay", i)).unwrap();
        }
        let order: Vec<&str> = drain(&q).iter().map(|x| x.0).collect();
        assert_eq!(
            order[..8],
            [
                "a", "relay", "relay", "relay", "a", "relay", "relay", "relay"
            ]
        );
    }

    #[test]
    fn clients_inside_a_source_take_turns() {
        let q: Q = FairQueue::new(1000, 100);
        for i in 0..5 {
            q.push("relay", 1, 1, ("relay", 100 + i)).unwrap();
        }
        q.push("relay", 1, 2, ("relay", 200)).unwrap();
        let order: Vec<u32> = drain(&q).iter().map(|x| x.1).collect();
        assert_eq!(
            order[..2],
            [100, 200],
            "client 2 does not wait behind client 1's backlog"
        );
    }

    #[test]
    fn a_relay_may_hold_its_weight_times_the_cap() {
        let q: Q = FairQueue::new(10_000, 4);
        let ok = (0..1000)
            .filter(|i| q.push("relay", 16, *i, ("relay", *i)).is_ok())
            .count();
        assert_eq!(ok, 64);
    }

    #[test]
    fn total_capacity_is_a_hard_bound() {
        let q: Q = FairQueue::new(3, 100);
        q.push("a", 1, 0, ("a", 0)).unwrap();
        q.push("b", 1, 0, ("b", 0)).unwrap();
        q.push("c", 1, 0, ("c", 0)).unwrap();
        assert!(matches!(
            q.push("d", 1, 0, ("d", 0)),
            Err(PushError::Full(("d", 0)))
        ));
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn close_drains_then_returns_none() {
        let q: Q = FairQueue::new(4, 4);
        q.push("a", 1, 0, ("a", 1)).unwrap();
        q.push("a", 1, 0, ("a", 2)).unwrap();
        q.close();
        assert!(matches!(
            q.push("a", 1, 0, ("a", 3)),
            Err(PushError::Closed(_))
        ));
        assert_eq!(q.pop(), Some(("a", 1)));
        assert_eq!(q.pop(), Some(("a", 2)));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn blocked_workers_wake_on_push_and_on_close() {
        let q: Arc<FairQueue<u32, u32, u32>> = Arc::new(FairQueue::new(8, 8));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || std::iter::from_fn(|| q.pop()).collect::<Vec<_>>())
            })
            .collect();
        for i in 0..5 {
            let mut item = i;
            loop {
                match q.push(i % 2, 1, i, item) {
                    Ok(_) => break,
                    Err(PushError::Full(x)) => {
                        item = x;
                        std::thread::yield_now();
                    }
                    Err(PushError::Closed(_)) => unreachable!(),
                }
            }
        }
        q.close();
        let mut all: Vec<u32> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn expiry_boundary() {
        let t0 = Instant::now();
        let max = Duration::from_secs(2);
        assert!(!is_expired(t0, t0, max));
        assert!(
            !is_expired(t0, t0 + max, max),
            "exactly max_age is still fresh"
        );
        assert!(is_expired(t0, t0 + max + Duration::from_millis(1), max));
        // A clock that appears to go backwards never expires a job.
        assert!(!is_expired(t0 + max, t0, max));
    }
}
