//! How many datastore reads coffer has in flight against one host, and how
//! that number adapts: it starts at the source's `max_requests`, halves
//! when the host answers 503 (busy) or drops a connection, and grows by one
//! after a run of successes as long as the current number, up to the
//! maximum again (additive increase, multiplicative decrease). Only a
//! request sent after the last cut can cut again (the answers to requests
//! already in flight tell nothing about the new number), and growth waits a
//! while after a cut, so a host that takes one transfer at a time is not
//! probed with a second one every other request.
//!
//! Why: ESXi's file service (`/folder`, served by hostd) has a small pool
//! for HTTP transfers shared by every client of the host and answers 503
//! when it is exhausted; clients that read disks over it treat 503 as
//! "slow down" (the Proxmox VE ESXi importer, pve-esxi-import-tools
//! `src/esxi.rs`, names it "rate limited" and keeps a small semaphore of
//! requests per host). The host-wide budget is documented for NFC in the
//! VDDK programming guide, "NFC Session Connection Limits": the limits are
//! per host, not per process, and the sum of transfer buffers is capped.
//!
//! One gate per host for the whole process (`for_host`): backups of several
//! VMs side by side share their host's budget.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long after a cut the number stays down before it may grow.
const GROWTH_DELAY: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct State {
    growth_delay: Duration,
    max: usize,
    limit: usize,
    in_flight: usize,
    successes: usize,
    last_cut: Option<Instant>,
    cuts: u64,
}

/// The requests in flight against one host.
#[derive(Debug)]
pub struct HostGate {
    state: Mutex<State>,
    freed: Condvar,
}

/// One request's place in the gate; tell it how the request went.
#[derive(Debug)]
pub struct Permit<'a> {
    gate: &'a HostGate,
    /// The gate's cuts when this request was let in.
    cuts_then: u64,
}

impl HostGate {
    pub fn new(max: usize) -> HostGate {
        HostGate::with_growth_delay(max, GROWTH_DELAY)
    }

    /// A gate whose number may grow `growth_delay` after a cut.
    pub fn with_growth_delay(max: usize, growth_delay: Duration) -> HostGate {
        let max = max.max(1);
        HostGate {
            state: Mutex::new(State {
                growth_delay,
                max,
                limit: max,
                in_flight: 0,
                successes: 0,
                last_cut: None,
                cuts: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a place (fewer requests in flight than the current limit).
    pub fn enter(&self) -> Permit<'_> {
        let mut s = self.lock();
        while s.in_flight >= s.limit {
            s = self.freed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.in_flight += 1;
        Permit {
            gate: self,
            cuts_then: s.cuts,
        }
    }

    /// Requests allowed in flight now.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// How often the host made coffer slow down.
    pub fn cuts(&self) -> u64 {
        self.lock().cuts
    }

    fn set_max(&self, max: usize) {
        let mut s = self.lock();
        s.max = max.max(1);
        s.limit = s.limit.min(s.max);
        drop(s);
        self.freed.notify_all();
    }

    fn leave(&self, outcome: Outcome, cuts_then: u64) {
        let mut s = self.lock();
        s.in_flight -= 1;
        match outcome {
            Outcome::Done => {
                s.successes += 1;
                let settled = s.last_cut.is_none_or(|t| t.elapsed() >= s.growth_delay);
                if settled && s.successes >= s.limit && s.limit < s.max {
                    s.limit += 1;
                    s.successes = 0;
                }
            }
            Outcome::Busy => {
                if cuts_then == s.cuts {
                    s.limit = (s.limit / 2).max(1);
                    s.last_cut = Some(Instant::now());
                    s.cuts += 1;
                }
                s.successes = 0;
            }
            Outcome::Neutral => {}
        }
        drop(s);
        self.freed.notify_all();
    }
}

enum Outcome {
    Done,
    Busy,
    Neutral,
}

impl Permit<'_> {
    /// The host answered as asked.
    pub fn done(self) {
        self.gate.leave(Outcome::Done, self.cuts_then);
        std::mem::forget(self);
    }

    /// The host said it is busy (503), or dropped the connection.
    pub fn busy(self) {
        self.gate.leave(Outcome::Busy, self.cuts_then);
        std::mem::forget(self);
    }
}

impl Drop for Permit<'_> {
    /// Any other end (an error that is not the host's load) leaves the
    /// limit as it was.
    fn drop(&mut self) {
        self.gate.leave(Outcome::Neutral, self.cuts_then);
    }
}

/// The process's gate for `host` (`name:port`), allowing at most `max`
/// requests; a later caller with another maximum changes it for all.
pub fn for_host(host: &str, max: usize) -> Arc<HostGate> {
    static GATES: OnceLock<Mutex<HashMap<String, Arc<HostGate>>>> = OnceLock::new();
    let mut gates = GATES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match gates.get(host) {
        Some(g) => {
            if g.lock().max != max.max(1) {
                g.set_max(max);
            }
            g.clone()
        }
        None => {
            let g = Arc::new(HostGate::new(max));
            gates.insert(host.to_string(), g.clone());
            g
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_halves_the_limit_once_per_burst_and_successes_grow_it_back() {
        let g = HostGate::with_growth_delay(8, Duration::ZERO);
        assert_eq!(g.limit(), 8);
        // Three 503s to requests sent before any cut: one cut.
        let permits: Vec<_> = (0..3).map(|_| g.enter()).collect();
        for p in permits {
            p.busy();
        }
        assert_eq!((g.limit(), g.cuts()), (4, 1));
        // A request sent after the cut that is turned away cuts again.
        g.enter().busy();
        assert_eq!((g.limit(), g.cuts()), (2, 2));
        for _ in 0..2 {
            g.enter().done();
        }
        assert_eq!(g.limit(), 3);
        g.enter().done();
        g.enter().done();
        g.enter().done();
        assert_eq!(g.limit(), 4);
        // Never below one, never above the maximum.
        let small = HostGate::with_growth_delay(1, Duration::ZERO);
        small.enter().busy();
        assert_eq!(small.limit(), 1);
        for _ in 0..10 {
            small.enter().done();
        }
        assert_eq!(small.limit(), 1);
        // Right after a cut the number stays down.
        let slow = HostGate::new(4);
        slow.enter().busy();
        for _ in 0..10 {
            slow.enter().done();
        }
        assert_eq!(slow.limit(), 2);
    }

    #[test]
    fn no_more_than_the_limit_are_in_flight() {
        let g = Arc::new(HostGate::new(2));
        let peak = Arc::new(Mutex::new((0usize, 0usize)));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let (g, peak) = (g.clone(), peak.clone());
                s.spawn(move || {
                    for _ in 0..20 {
                        let p = g.enter();
                        {
                            let mut m = peak.lock().unwrap();
                            m.0 += 1;
                            m.1 = m.1.max(m.0);
                        }
                        std::thread::yield_now();
                        peak.lock().unwrap().0 -= 1;
                        p.done();
                    }
                });
            }
        });
        let (now, most) = *peak.lock().unwrap();
        assert_eq!(now, 0);
        assert!((1..=2).contains(&most), "{most} in flight at once");
    }

    #[test]
    fn one_gate_per_host() {
        let a = for_host("gate-test-a:443", 3);
        let b = for_host("gate-test-a:443", 3);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &for_host("gate-test-b:443", 3)));
        for_host("gate-test-a:443", 1);
        assert_eq!(a.limit(), 1);
    }
}
