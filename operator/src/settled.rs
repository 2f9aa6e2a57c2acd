//! Which agent buckets a check has already counted, kept with the check's window so that both
//! survive an operator restart together.
//!
//! Each agent process (`agent name`, `boot id`) numbers its buckets with one increasing
//! sequence across all checks, sends them oldest first, one batch at a time, and resends a
//! batch until it is acknowledged. So for one check and one agent process, the buckets counted
//! so far are exactly those up to the highest sequence number counted: a single watermark per
//! (check, agent process) tells a resent bucket from a new one. Keeping it per check, written
//! in the same object as the check's counts, makes "counted" and "remembered as counted" one
//! atomic fact: after a crash, a bucket is either in both or in neither, and the agent's resend
//! restores what was lost without counting anything twice.
//!
//! Agent processes are keyed by a 64-bit hash of name and boot id (a collision between two of
//! a check's few thousand agent processes has odds around 10⁻¹²). Entries of processes silent
//! for longer than an agent keeps unacknowledged buckets are forgotten.

use std::collections::HashMap;

use netslo_protocol::hash::fnv1a_64;

use crate::slo::UnixMs;
use crate::slo::window::{DecodeError, Reader, put_varint, seal, unzigzag, zigzag};

/// An agent process silent this long has nothing left to resend: agents drop unacknowledged
/// buckets after an hour (their outbox age limit), plus margin.
pub const FORGET_AFTER_MS: i64 = 2 * 60 * 60_000;
/// Most agent processes remembered per check (the oldest are forgotten first): bounds what a
/// stored record, or a hostile one, can make the operator hold.
pub const MAX_ENTRIES: usize = 50_000;

const MAGIC: &[u8; 4] = b"NSLS";
const VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    seq: u64,
    seen_ms: UnixMs,
}

/// Per agent process, the highest sequence number counted for one check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    marks: HashMap<u64, Mark>,
}

/// The key of one agent process: FNV-1a 64 over name, a separator no name contains, and boot.
fn process_key(agent: &str, boot: &str) -> u64 {
    fnv1a_64(agent.bytes().chain([0u8]).chain(boot.bytes()))
}

impl Settled {
    /// Whether `seq` of this agent process was already counted.
    pub fn contains(&self, agent: &str, boot: &str, seq: u64) -> bool {
        self.marks
            .get(&process_key(agent, boot))
            .is_some_and(|m| seq <= m.seq)
    }

    /// Records `seq` as counted at `now`.
    pub fn insert(&mut self, agent: &str, boot: &str, seq: u64, now: UnixMs) {
        let mark = self
            .marks
            .entry(process_key(agent, boot))
            .or_insert(Mark { seq, seen_ms: now });
        mark.seq = mark.seq.max(seq);
        mark.seen_ms = mark.seen_ms.max(now);
        if self.marks.len() > MAX_ENTRIES {
            self.forget_oldest(self.marks.len() - MAX_ENTRIES);
        }
    }

    /// Forgets agent processes silent since `now - FORGET_AFTER_MS`.
    pub fn prune(&mut self, now: UnixMs) {
        let horizon = now.saturating_sub(FORGET_AFTER_MS);
        self.marks.retain(|_, m| m.seen_ms >= horizon);
    }

    pub fn len(&self) -> usize {
        self.marks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    fn forget_oldest(&mut self, n: usize) {
        let mut by_age: Vec<(UnixMs, u64)> =
            self.marks.iter().map(|(k, m)| (m.seen_ms, *k)).collect();
        by_age.sort_unstable();
        for (_, key) in by_age.into_iter().take(n) {
            self.marks.remove(&key);
        }
    }

    /// Deterministic binary form: magic, version, count, entries sorted by key (key as 8
    /// little-endian bytes, sequence and time as varints), FNV-1a checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut entries: Vec<(&u64, &Mark)> = self.marks.iter().collect();
        entries.sort_unstable_by_key(|(k, _)| **k);
        let mut out = Vec::with_capacity(16 + entries.len() * 18);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_varint(&mut out, entries.len() as u64);
        for (key, mark) in entries {
            out.extend_from_slice(&key.to_le_bytes());
            put_varint(&mut out, mark.seq);
            put_varint(&mut out, zigzag(mark.seen_ms));
        }
        seal(&mut out);
        out
    }

    /// Reads what [`Settled::encode`] wrote; corrupt or hostile input is an error, not a panic.
    pub fn decode(bytes: &[u8]) -> Result<Settled, DecodeError> {
        let mut r = Reader::framed(bytes, MAGIC, VERSION)?;
        let n = r.length(MAX_ENTRIES as u64)?;
        let mut marks = HashMap::with_capacity(usize::try_from(n).unwrap_or(0));
        for _ in 0..n {
            let mut key = [0u8; 8];
            for b in &mut key {
                *b = r.byte()?;
            }
            let seq = r.varint()?;
            let seen_ms = unzigzag(r.varint()?);
            if marks
                .insert(u64::from_le_bytes(key), Mark { seq, seen_ms })
                .is_some()
            {
                return Err(DecodeError::OutOfRange("duplicate agent process"));
            }
        }
        r.finish()?;
        Ok(Settled { marks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMs = 1_800_000_000_000;

    #[test]
    fn a_watermark_per_agent_process() {
        let mut s = Settled::default();
        s.insert("node-a", "boot-1", 7, NOW);
        assert!(s.contains("node-a", "boot-1", 7));
        assert!(s.contains("node-a", "boot-1", 3), "below the watermark");
        assert!(!s.contains("node-a", "boot-1", 8));
        assert!(!s.contains("node-a", "boot-2", 1), "a new boot starts over");
        assert!(!s.contains("node-b", "boot-1", 1));
        // A resend never lowers the watermark.
        s.insert("node-a", "boot-1", 5, NOW);
        assert!(s.contains("node-a", "boot-1", 7));
        // Name and boot cannot be re-split to collide.
        assert_ne!(process_key("ab", "c"), process_key("a", "bc"));
    }

    #[test]
    fn silent_processes_are_forgotten_and_size_is_bounded() {
        let mut s = Settled::default();
        s.insert("old", "b", 1, NOW - FORGET_AFTER_MS - 1);
        s.insert("fresh", "b", 1, NOW - 1_000);
        s.prune(NOW);
        assert!(!s.contains("old", "b", 1));
        assert!(s.contains("fresh", "b", 1));

        let mut big = Settled::default();
        for i in 0..(MAX_ENTRIES + 10) {
            big.insert(&format!("n{i}"), "b", 1, NOW + i as i64);
        }
        assert_eq!(big.len(), MAX_ENTRIES);
        assert!(!big.contains("n0", "b", 1), "the oldest went first");
        assert!(big.contains(&format!("n{}", MAX_ENTRIES + 9), "b", 1));
    }

    #[test]
    fn round_trips_and_rejects_corruption() {
        let mut s = Settled::default();
        for (i, agent) in ["a", "b", "c"].iter().enumerate() {
            s.insert(agent, "boot", 100 + i as u64, NOW - i as i64);
        }
        let bytes = s.encode();
        assert_eq!(Settled::decode(&bytes).unwrap(), s);
        assert_eq!(
            bytes,
            Settled::decode(&bytes).unwrap().encode(),
            "deterministic"
        );
        assert_eq!(
            Settled::decode(&Settled::default().encode()).unwrap().len(),
            0
        );

        let mut flipped = bytes.clone();
        flipped[8] ^= 1;
        assert_eq!(Settled::decode(&flipped), Err(DecodeError::Checksum));
        assert_eq!(Settled::decode(&bytes[..6]), Err(DecodeError::Truncated));
        assert_eq!(Settled::decode(b"NSLHxxxxxxxx"), Err(DecodeError::BadMagic));
        // Every truncation of a valid record is an error, never a panic.
        for len in 0..bytes.len() {
            assert!(Settled::decode(&bytes[..len]).is_err(), "length {len}");
        }
        // A count larger than the limit is refused before anything is allocated.
        let mut huge = MAGIC.to_vec();
        huge.push(VERSION);
        put_varint(&mut huge, u64::MAX);
        seal(&mut huge);
        assert_eq!(
            Settled::decode(&huge),
            Err(DecodeError::OutOfRange("length"))
        );
    }
}
