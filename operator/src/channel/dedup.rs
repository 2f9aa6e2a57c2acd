//! De-duplication of buckets by `(agent, bootId, seq)` with bounded memory.
//!
//! Agents send their buckets oldest first and resend a batch until it is settled, so the
//! sequence numbers settled for one agent process form a few ranges (one gap per stretch the
//! agent dropped while the operator was away). A [`SeqSet`] keeps those ranges, at most
//! [`SeqSet::MAX_RANGES`]; past that the oldest gap is closed, which is safe because an agent
//! never resends below a settled batch. An agent keeps at most [`AgentSeqs::MAX_BOOTS`] boots
//! (a new boot means the old process, and its unacknowledged buffer, is gone).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Sequence numbers seen, as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    ranges: Vec<(u64, u64)>,
}

impl SeqSet {
    /// Most ranges kept.
    pub const MAX_RANGES: usize = 64;

    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, seq: u64) -> bool {
        // First range whose end is >= seq.
        let i = self.ranges.partition_point(|&(_, hi)| hi < seq);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= seq)
    }

    /// Adds `seq`; false if it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < seq);
        if self.ranges.get(i).is_some_and(|&(lo, _)| lo <= seq) {
            return false;
        }
        let joins_prev = i > 0 && self.ranges[i - 1].1.checked_add(1) == Some(seq);
        let joins_next = self
            .ranges
            .get(i)
            .is_some_and(|&(lo, _)| seq.checked_add(1) == Some(lo));
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = seq,
            (false, true) => self.ranges[i].0 = seq,
            (false, false) => self.ranges.insert(i, (seq, seq)),
        }
        if self.ranges.len() > Self::MAX_RANGES {
            // Close the oldest gap.
            let hi = self.ranges[1].1;
            self.ranges[0].1 = hi;
            self.ranges.remove(1);
        }
        true
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Highest sequence number seen.
    pub fn max(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.1)
    }
}

/// What is known of one agent: its recent boots.
#[derive(Debug, Default)]
pub struct AgentSeqs {
    /// `(boot id, settled seqs, last dropped count reported)`, most recent last.
    boots: VecDeque<(String, SeqSet, u64)>,
}

impl AgentSeqs {
    pub const MAX_BOOTS: usize = 4;

    fn find(&self, boot: &str) -> Option<usize> {
        self.boots.iter().position(|(b, _, _)| b == boot)
    }

    pub fn contains(&self, boot: &str, seq: u64) -> bool {
        self.find(boot)
            .is_some_and(|i| self.boots[i].1.contains(seq))
    }

    fn entry(&mut self, boot: &str) -> &mut (String, SeqSet, u64) {
        let i = match self.find(boot) {
            Some(i) => i,
            None => {
                if self.boots.len() >= Self::MAX_BOOTS {
                    self.boots.pop_front();
                }
                self.boots.push_back((boot.to_owned(), SeqSet::new(), 0));
                self.boots.len() - 1
            }
        };
        &mut self.boots[i]
    }

    /// Marks `seq` settled; false if it already was.
    pub fn insert(&mut self, boot: &str, seq: u64) -> bool {
        self.entry(boot).1.insert(seq)
    }

    /// Records the agent's cumulative dropped count; returns the increase since last time.
    pub fn dropped(&mut self, boot: &str, total: u64) -> u64 {
        let e = self.entry(boot);
        let delta = total.saturating_sub(e.2);
        e.2 = e.2.max(total);
        delta
    }

    pub fn boots(&self) -> usize {
        self.boots.len()
    }
}

type Shared = Arc<tokio::sync::Mutex<AgentSeqs>>;
/// Agent → (state, last use), and the use counter.
type Agents = (HashMap<String, (Shared, u64)>, u64);

/// Per-agent de-duplication state, each behind its own async lock (held while a batch is
/// checked, stored and marked, so concurrent resends of one batch cannot both count), at
/// most `max_agents` agents (the least recently used is forgotten).
#[derive(Debug)]
pub struct Dedup {
    agents: Mutex<Agents>,
    max_agents: usize,
}

impl Dedup {
    pub fn new(max_agents: usize) -> Self {
        Dedup {
            agents: Mutex::new((HashMap::new(), 0)),
            max_agents: max_agents.max(1),
        }
    }

    fn map(&self) -> MutexGuard<'_, Agents> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of one agent, created if new.
    pub fn agent(&self, name: &str) -> Shared {
        let mut guard = self.map();
        let (map, tick) = &mut *guard;
        *tick += 1;
        let now = *tick;
        if let Some((s, used)) = map.get_mut(name) {
            *used = now;
            return s.clone();
        }
        if map.len() >= self.max_agents
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let s = Shared::default();
        map.insert(name.to_owned(), (s.clone(), now));
        s
    }

    pub fn len(&self) -> usize {
        self.map().0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_set_merges_and_counts_once() {
        let mut s = SeqSet::new();
        for seq in [5, 3, 4, 10, 1] {
            assert!(s.insert(seq));
        }
        assert_eq!(s.ranges(), &[(1, 1), (3, 5), (10, 10)]);
        for seq in [1, 3, 4, 5, 10] {
            assert!(!s.insert(seq), "{seq} twice");
            assert!(s.contains(seq));
        }
        for seq in [0, 2, 6, 9, 11, u64::MAX] {
            assert!(!s.contains(seq));
        }
        assert!(s.insert(2));
        assert_eq!(s.ranges(), &[(1, 5), (10, 10)]);
        assert!(s.insert(u64::MAX));
        assert!(s.insert(0));
        assert_eq!(s.ranges()[0], (0, 5));
        assert_eq!(s.max(), Some(u64::MAX));
    }

    #[test]
    fn seq_set_is_bounded_by_closing_the_oldest_gap() {
        let mut s = SeqSet::new();
        // Every other number: one range each.
        for i in 0..1_000u64 {
            s.insert(i * 2);
            assert!(s.ranges().len() <= SeqSet::MAX_RANGES);
        }
        // Recent history is exact...
        assert!(s.contains(1_998));
        assert!(!s.contains(1_997));
        // ...old gaps were closed.
        assert!(s.contains(1));
    }

    #[test]
    fn contiguous_streams_stay_one_range() {
        let mut s = SeqSet::new();
        for i in 1..=100_000u64 {
            assert!(s.insert(i));
        }
        assert_eq!(s.ranges(), &[(1, 100_000)]);
    }

    #[test]
    fn boots_are_separate_and_bounded() {
        let mut a = AgentSeqs::default();
        assert!(a.insert("b1", 1));
        assert!(a.insert("b2", 1), "same seq, new boot: not a duplicate");
        assert!(!a.insert("b1", 1));
        for b in ["b3", "b4", "b5"] {
            a.insert(b, 1);
        }
        assert_eq!(a.boots(), AgentSeqs::MAX_BOOTS);
        assert!(!a.contains("b1", 1), "oldest boot forgotten");
        assert!(a.contains("b5", 1));
        assert_eq!(a.dropped("b5", 10), 10);
        assert_eq!(a.dropped("b5", 15), 5);
        assert_eq!(a.dropped("b5", 3), 0);
    }

    #[test]
    fn agents_are_bounded() {
        let d = Dedup::new(3);
        let first = d.agent("a");
        for n in ["b", "c", "d", "e"] {
            d.agent(n);
        }
        assert_eq!(d.len(), 3);
        assert!(!Arc::ptr_eq(&first, &d.agent("a")), "a was forgotten");
    }
}
