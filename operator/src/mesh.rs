//! Mesh peer rotation (design notes §5): each agent probes a bounded set of `k` peers per round,
//! and the sets rotate so that every ordered pair of agents is probed within a stated period.
//!
//! Over a stable, sorted list of N agents, agent `i` in round `r` probes
//! `(i + 1 + ((r·k + j) mod (N − 1))) mod N` for `j` in `0..k`, with `k = min(peersPerAgent, N − 1)`.
//! Within a round the offsets `(r·k + j) mod (N − 1)` are `k` distinct values of `0..N−1`, so an
//! agent never probes itself or a peer twice; over `⌈(N − 1)/k⌉` consecutive rounds they run
//! through every offset, so every ordered pair is covered. Per-agent work is exactly `k` probes
//! per round, whatever N is: at N = 5,000, k = 16 and 10 s rounds, 1.6 probes/s per agent and a
//! full rotation every 313 rounds (52 minutes).

use std::time::Duration;

use netslo_crds::v1alpha1::MeshCoverage;

use crate::slo::UnixMs;
use crate::status::quantise;

/// Peers per agent and round when the spec does not say.
pub const DEFAULT_PEERS_PER_AGENT: usize = 16;

/// One agent of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Agent {
    /// Node the agent runs on (the sort key, with the agent's own name).
    pub node: String,
    pub name: String,
    pub zone: Option<String>,
}

/// One peer an agent probes in a round, labelled for aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer<'a> {
    pub agent: &'a Agent,
    /// Both agents run on the same node (pod-to-pod on one node, no wire in between).
    pub same_node: bool,
    /// `(source zone, peer zone)`, when both are known.
    pub zone_pair: Option<(&'a str, &'a str)>,
}

/// The rotating peer plan of one mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPlan {
    agents: Vec<Agent>,
    peers_per_agent: usize,
}

impl MeshPlan {
    /// Sorts the agents (so every replica of the operator computes the same plan) and bounds
    /// `k` by N − 1. `peers_per_agent` is the spec's value (default 16).
    pub fn new(mut agents: Vec<Agent>, peers_per_agent: Option<i32>) -> Self {
        agents.sort();
        agents.dedup();
        let requested = peers_per_agent
            .and_then(|k| usize::try_from(k).ok())
            .filter(|k| *k > 0)
            .unwrap_or(DEFAULT_PEERS_PER_AGENT);
        let k = requested.min(agents.len().saturating_sub(1));
        MeshPlan {
            agents,
            peers_per_agent: k,
        }
    }

    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// Effective `k`.
    pub fn peers_per_agent(&self) -> usize {
        self.peers_per_agent
    }

    /// Rounds until every ordered pair has been probed: ⌈(N − 1)/k⌉ (0 when there is no pair).
    pub fn rotation_rounds(&self) -> u64 {
        let others = self.agents.len().saturating_sub(1) as u64;
        match self.peers_per_agent as u64 {
            0 => 0,
            k => others.div_ceil(k),
        }
    }

    /// The rotation period for rounds of `interval`.
    pub fn rotation_period(&self, interval: Duration) -> Duration {
        interval.saturating_mul(u32::try_from(self.rotation_rounds()).unwrap_or(u32::MAX))
    }

    /// Indexes (into [`MeshPlan::agents`]) of the peers agent `i` probes in `round`.
    pub fn peer_indexes(&self, i: usize, round: u64) -> impl Iterator<Item = usize> + '_ {
        let n = self.agents.len() as u64;
        let others = n.saturating_sub(1).max(1);
        let k = self.peers_per_agent as u64;
        let base = (round % others) * (k % others) % others;
        let i = i as u64;
        (0..k)
            .filter(move |_| i < n)
            .map(move |j| ((i + 1 + (base + j) % others) % n) as usize)
    }

    /// The labelled peers agent `i` probes in `round`.
    pub fn peers(&self, i: usize, round: u64) -> impl Iterator<Item = Peer<'_>> + '_ {
        let source = self.agents.get(i);
        self.peer_indexes(i, round).filter_map(move |p| {
            let (source, agent) = (source?, self.agents.get(p)?);
            Some(Peer {
                agent,
                same_node: source.node == agent.node,
                zone_pair: source.zone.as_deref().zip(agent.zone.as_deref()),
            })
        })
    }

    /// Status block: peers per agent, the rotation period, and (when the caller counted them
    /// from results) the fraction of ordered pairs probed within the last period.
    pub fn coverage(&self, interval: Duration, pairs_probed: Option<u64>) -> MeshCoverage {
        let n = self.agents.len() as u64;
        let pairs = n * n.saturating_sub(1);
        MeshCoverage {
            peers_per_agent: i32::try_from(self.peers_per_agent).unwrap_or(i32::MAX),
            rotation_period: format_period(self.rotation_period(interval)),
            pairs_covered: pairs_probed.filter(|_| pairs > 0).map(|probed| {
                quantise::decimals_down(
                    i128::from(probed.min(pairs)),
                    u128::from(pairs),
                    quantise::COVERAGE_DECIMALS,
                )
            }),
        }
    }
}

/// The round a time falls in, for rounds of `interval_ms` counted from the Unix epoch (so every
/// agent and the operator agree without coordination).
pub fn round_at(now: UnixMs, interval_ms: i64) -> u64 {
    u64::try_from(now.div_euclid(interval_ms.max(1))).unwrap_or(0)
}

/// "52m", "1h5m", "40s": whole seconds, largest units first.
fn format_period(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents(n: usize) -> Vec<Agent> {
        (0..n)
            .map(|i| Agent {
                node: format!("node-{i:05}"),
                name: format!("agent-{i:05}"),
                zone: Some(format!("zone-{}", i % 3)),
            })
            .collect()
    }

    /// Every ordered pair is covered within the rotation period, no agent probes itself or a
    /// peer twice in a round, and per-agent work is exactly k per round.
    fn assert_full_rotation(n: usize, requested: i32) {
        let plan = MeshPlan::new(agents(n), Some(requested));
        let k = plan.peers_per_agent();
        assert_eq!(k, (requested as usize).min(n.saturating_sub(1)));
        let rounds = plan.rotation_rounds();
        // Start at an arbitrary round: coverage holds for any window of `rounds` rounds.
        let first = 1_234_567;
        // One bit per ordered pair: 5,000² pairs fit in 3 MB.
        let mut covered = vec![0u64; (n * n).div_ceil(64)];
        let mut seen = vec![u64::MAX; n];
        for round in first..first + rounds {
            for i in 0..n {
                let peers: Vec<usize> = plan.peer_indexes(i, round).collect();
                assert_eq!(peers.len(), k, "n={n} i={i} round={round}");
                for p in peers {
                    assert_ne!(p, i, "self-probe n={n}");
                    assert_ne!(seen[p], round * n as u64 + i as u64, "duplicate peer n={n}");
                    seen[p] = round * n as u64 + i as u64;
                    covered[(i * n + p) / 64] |= 1 << ((i * n + p) % 64);
                }
            }
        }
        for i in 0..n {
            for p in 0..n {
                if i != p {
                    let bit = covered[(i * n + p) / 64] >> ((i * n + p) % 64) & 1;
                    assert_eq!(bit, 1, "pair {i}->{p} uncovered, n={n}");
                }
            }
        }
    }

    #[test]
    fn every_ordered_pair_is_covered_within_the_period() {
        for (n, k) in [
            (1, 16),
            (2, 16),
            (3, 1),
            (17, 16),
            (17, 5),
            (100, 7),
            (257, 256),
            (1_000, 16),
        ] {
            assert_full_rotation(n, k);
        }
    }

    #[test]
    fn five_thousand_agents_rotate_in_313_rounds() {
        let plan = MeshPlan::new(agents(5_000), None);
        assert_eq!(plan.peers_per_agent(), 16);
        assert_eq!(plan.rotation_rounds(), 313);
        assert_eq!(
            plan.rotation_period(Duration::from_secs(10)),
            Duration::from_secs(3_130)
        );
        assert_full_rotation(5_000, 16);
    }

    #[test]
    fn small_meshes() {
        let cases = [(0, 0, 0), (1, 0, 0), (2, 1, 1), (17, 16, 1), (18, 16, 2)];
        for (n, k, rounds) in cases {
            let plan = MeshPlan::new(agents(n), None);
            assert_eq!(
                (plan.peers_per_agent(), plan.rotation_rounds()),
                (k, rounds),
                "n={n}"
            );
        }
        assert_eq!(MeshPlan::new(agents(1), None).peer_indexes(0, 7).count(), 0);
        assert_eq!(
            MeshPlan::new(agents(3), None).peer_indexes(5, 0).count(),
            0,
            "unknown agent"
        );
    }

    #[test]
    fn the_plan_ignores_input_order() {
        let mut shuffled = agents(20);
        shuffled.reverse();
        assert_eq!(
            MeshPlan::new(shuffled, Some(4)),
            MeshPlan::new(agents(20), Some(4))
        );
    }

    #[test]
    fn peers_are_labelled() {
        let mut list = agents(4);
        // A second agent on node-00000 (workload agents can share nodes).
        list.push(Agent {
            node: "node-00000".into(),
            name: "agent-extra".into(),
            zone: None,
        });
        let plan = MeshPlan::new(list, Some(4));
        let source = plan
            .agents()
            .iter()
            .position(|a| a.name == "agent-00000")
            .unwrap();
        let peers: Vec<Peer<'_>> = plan.peers(source, 0).collect();
        assert_eq!(peers.len(), 4);
        let extra = peers
            .iter()
            .find(|p| p.agent.name == "agent-extra")
            .unwrap();
        assert!(extra.same_node);
        assert_eq!(extra.zone_pair, None);
        let other = peers
            .iter()
            .find(|p| p.agent.name == "agent-00001")
            .unwrap();
        assert!(!other.same_node);
        assert_eq!(other.zone_pair, Some(("zone-0", "zone-1")));
    }

    #[test]
    fn coverage_in_status() {
        let plan = MeshPlan::new(agents(5_000), None);
        let c = plan.coverage(Duration::from_secs(10), Some(5_000 * 4_999 / 2));
        assert_eq!(c.peers_per_agent, 16);
        assert_eq!(c.rotation_period, "52m10s");
        assert_eq!(c.pairs_covered.as_deref(), Some("0.5"));
        let lone = MeshPlan::new(agents(1), None).coverage(Duration::from_secs(10), Some(0));
        assert_eq!(
            (lone.rotation_period.as_str(), lone.pairs_covered),
            ("0s", None)
        );
        assert_eq!(round_at(25_000, 10_000), 2);
        assert_eq!(round_at(-1, 10_000), 0);
    }
}
