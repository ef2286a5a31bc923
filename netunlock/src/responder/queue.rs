//! The bounded queue between the receive loops (which never do RSA) and the worker threads.
//!
//! A full queue refuses the push (the caller drops the request and counts it); every job carries its
//! receive instant so workers can drop requests that waited past the client's retry window.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// A multi-producer, multi-consumer bounded FIFO.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
    capacity: usize,
}

/// Why a push was refused; the job is handed back.
#[derive(Debug)]
pub enum PushError<T> {
    Full(T),
    Closed(T),
}

impl<T> BoundedQueue<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity.min(65_536)),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    // A worker that panicked while holding the lock leaves a consistent VecDeque behind; keep going.
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `item` unless the queue is full or closed. Returns the new depth.
    pub fn push(&self, item: T) -> Result<usize, PushError<T>> {
        let mut g = self.lock();
        if g.closed {
            return Err(PushError::Closed(item));
        }
        if g.items.len() >= self.capacity {
            return Err(PushError::Full(item));
        }
        g.items.push_back(item);
        let depth = g.items.len();
        drop(g);
        self.ready.notify_one();
        Ok(depth)
    }

    /// Waits for the next item. Returns None once the queue is closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut g = self.lock();
        loop {
            if let Some(item) = g.items.pop_front() {
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
        self.lock().items.len()
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

    #[test]
    fn full_queue_refuses_and_hands_the_item_back() {
        let q = BoundedQueue::new(2);
        assert_eq!(q.push(1).unwrap(), 1);
        assert_eq!(q.push(2).unwrap(), 2);
        match q.push(3) {
            Err(PushError::Full(3)) => {}
            other => panic!("expected Full(3), got {other:?}"),
        }
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.push(4).unwrap(), 2);
    }

    #[test]
    fn close_drains_then_returns_none() {
        let q = BoundedQueue::new(4);
        q.push("a").unwrap();
        q.push("b").unwrap();
        q.close();
        assert!(matches!(q.push("c"), Err(PushError::Closed("c"))));
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(q.pop(), Some("b"));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn blocked_workers_wake_on_push_and_on_close() {
        let q = Arc::new(BoundedQueue::new(8));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(x) = q.pop() {
                        got.push(x);
                    }
                    got
                })
            })
            .collect();
        for i in 0..5 {
            // Spin politely if workers are slower than the producer.
            let mut item = i;
            loop {
                match q.push(item) {
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
        let mut all: Vec<i32> = workers
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
