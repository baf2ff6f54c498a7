//! Connection caps: how many WebSockets this node holds, in all and per
//! client address (`limits.max_connections`, `limits.max_connections_per_ip`).
//!
//! A connection is counted from the moment its upgrade request passes the
//! cap until its session ends (the [`Ticket`] travels with the session and
//! gives the place back when dropped), so a storm of upgrades in flight
//! counts as much as the sessions already open. A refusal is answered by
//! the upgrade route with HTTP 503 and error 1008 before anything else is
//! checked: a full server spends no signature check on it.
//!
//! Addresses: an IPv4 peer counts as itself; an IPv6 peer counts as its
//! /64 prefix (one subscriber's network: a client given a /64 could
//! otherwise take 2^64 places); an IPv4-mapped IPv6 address counts as its
//! IPv4 address. Behind a reverse proxy every client has the proxy's
//! address: leave the per-address cap off there (README, "Connection caps").

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node holds `limits.max_connections` connections.
    NodeFull,
    /// The client's address holds `limits.max_connections_per_ip`.
    AddressFull,
}

impl Refusal {
    /// The bounded metric label of the refusal: `max_connections` or
    /// `max_connections_per_ip`, the config key that refused it.
    pub fn label(self) -> &'static str {
        match self {
            Self::NodeFull => "max_connections",
            Self::AddressFull => "max_connections_per_ip",
        }
    }
}

/// The counts; shared by the upgrade route and the tickets it hands out.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    total: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
}

impl Admission {
    /// Caps of `max_total` connections and `max_per_address` per address;
    /// 0 is no cap.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a place for a connection from `peer` (the TCP peer; `None`
    /// when unknown, which only the global cap counts).
    ///
    /// # Errors
    /// [`Refusal::NodeFull`] or [`Refusal::AddressFull`]; nothing is taken.
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Ticket, Refusal> {
        let taken = self.total.fetch_add(1, Ordering::AcqRel);
        if self.max_total != 0 && taken >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::NodeFull);
        }
        let address = peer.map(address_key);
        if let Some(address) = address {
            let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            let count = counts.entry(address).or_insert(0);
            if self.max_per_address != 0 && *count >= self.max_per_address {
                if *count == 0 {
                    counts.remove(&address);
                }
                drop(counts);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::AddressFull);
            }
            *count += 1;
        }
        Ok(Ticket {
            admission: Arc::clone(self),
            address,
        })
    }

    /// Connections holding a place now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Connections holding a place from `peer`'s address (its /64 for IPv6).
    pub fn from_address(&self, peer: IpAddr) -> usize {
        let counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&address_key(peer)).copied().unwrap_or(0)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(address) = self.address {
            let mut counts = self
                .admission
                .per_address
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(count) = counts.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    // No entry outlives its connections: the map holds only
                    // addresses that are connected now.
                    counts.remove(&address);
                }
            }
        }
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The unit an address is counted in: IPv4 as is, IPv6 by its /64 prefix,
/// an IPv4-mapped IPv6 address as its IPv4 address.
fn address_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_global_cap_refuses_the_one_over_and_frees_on_drop() {
        let admission = Admission::new(2, 0);
        let a = admission.admit(ip("10.0.0.1")).unwrap();
        let _b = admission.admit(None).unwrap();
        assert_eq!(
            admission.admit(ip("10.0.0.2")).unwrap_err(),
            Refusal::NodeFull
        );
        assert_eq!(admission.total(), 2);
        drop(a);
        assert_eq!(admission.total(), 1);
        assert_eq!(admission.from_address("10.0.0.1".parse().unwrap()), 0);
        admission.admit(ip("10.0.0.2")).unwrap();
    }

    #[test]
    fn the_address_cap_counts_ipv6_by_its_64_and_mapped_v4_as_v4() {
        let admission = Admission::new(0, 1);
        let _a = admission.admit(ip("2001:db8:1:2::1")).unwrap();
        // Same /64, another host: the same subscriber.
        assert_eq!(
            admission.admit(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refusal::AddressFull
        );
        // Another /64 is another address.
        let _b = admission.admit(ip("2001:db8:1:3::1")).unwrap();
        let _c = admission.admit(ip("192.0.2.7")).unwrap();
        assert_eq!(
            admission.admit(ip("::ffff:192.0.2.7")).unwrap_err(),
            Refusal::AddressFull
        );
        // A refusal takes nothing.
        assert_eq!(admission.total(), 3);
    }

    #[test]
    fn zero_caps_admit_everyone_and_the_map_empties() {
        let admission = Admission::new(0, 0);
        let tickets: Vec<_> = (0..100)
            .map(|_| admission.admit(ip("10.1.1.1")).unwrap())
            .collect();
        assert_eq!(admission.from_address("10.1.1.1".parse().unwrap()), 100);
        drop(tickets);
        assert_eq!(admission.total(), 0);
        assert!(admission.per_address.lock().unwrap().is_empty());
    }
}
