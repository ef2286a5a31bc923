//! A cap on concurrent connections per client address, so one host holding many idle
//! connections cannot take every slot of the listener (health probes and agents of other hosts
//! would time out). A connection over the cap is closed right after accept, before TLS.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub(crate) struct PerClientCap {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Held for the life of one connection; gives its place back when dropped.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    cap: Arc<PerClientCap>,
    addr: IpAddr,
}

impl PerClientCap {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `addr`, or None when it already has `max` open.
    pub(crate) fn try_acquire(self: &Arc<Self>, addr: IpAddr) -> Option<ClientSlot> {
        let addr = canonical(addr);
        let mut open = self.open.lock().ok()?;
        let n = open.entry(addr).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            cap: self.clone(),
            addr,
        })
    }

    #[cfg(test)]
    fn open_for(&self, addr: IpAddr) -> usize {
        self.open
            .lock()
            .map(|o| o.get(&canonical(addr)).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.cap.open.lock()
            && let Some(n) = open.get_mut(&self.addr)
        {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// An IPv4 client reaching a dual-stack listener appears as `::ffff:a.b.c.d`: count it as itself.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_per_address() {
        let cap = PerClientCap::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap_or(a);
        let b: IpAddr = "192.0.2.2".parse().unwrap_or(a);
        let s1 = cap.try_acquire(a);
        let s2 = cap.try_acquire(mapped);
        assert!(s1.is_some() && s2.is_some());
        assert!(cap.try_acquire(a).is_none(), "a third from the same host");
        assert!(cap.try_acquire(b).is_some(), "another host is not affected");
        drop(s1);
        assert_eq!(cap.open_for(a), 1);
        assert!(
            cap.try_acquire(a).is_some(),
            "a slot given back is reusable"
        );
        drop(s2);
        assert_eq!(cap.open_for(a), 0);
    }
}
