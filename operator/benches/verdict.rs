//! Localising a mesh's failure as the cluster grows: one `localise` over the failure matrix of
//! a rotating mesh (16 peers per agent and round, 10 rounds of evidence: N·160 cells), the
//! last node in order cut off both ways (so every node is looked at before it), at 500, 2,000
//! and 5,000 nodes. The reference is the same run's
//! 500-node figure: work that follows the cells grows 4× from 500 to 2,000 nodes and 10× to
//! 5,000; a pass per node over every cell would grow 16× and 100×.
//!
//! Output: `name: value unit` lines.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use netslo_crds::v1alpha1::{FailureScope, Protocol};
use netslo_operator::mesh::{Agent, MeshPlan};
use netslo_operator::status::verdict::{Cell, localise};
use netslo_protocol::verdict::FailureReason;

const PEERS_PER_ROUND: i32 = 16;
const EVIDENCE_ROUNDS: u64 = 10;
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
const NOW: i64 = 1_767_225_600_000;

fn node(i: usize) -> String {
    format!("node-{i:05}")
}

/// The cells a mesh of `n` agents leaves within its evidence span.
fn mesh_cells(n: usize) -> Vec<Cell> {
    let agents = (0..n)
        .map(|i| Agent {
            node: node(i),
            name: node(i),
            zone: Some(ZONES[i % ZONES.len()].to_owned()),
        })
        .collect();
    let plan = MeshPlan::new(agents, Some(PEERS_PER_ROUND));
    let mut cells = Vec::new();
    for round in 0..EVIDENCE_ROUNDS {
        for (i, source) in plan.agents().iter().enumerate() {
            for p in plan.peer_indexes(i, round) {
                let peer = &plan.agents()[p];
                let cut = i == n - 1 || p == n - 1;
                cells.push(Cell {
                    source_node: source.node.as_str().into(),
                    source_zone: source.zone.as_deref().map(Into::into),
                    target: "peers".into(),
                    protocol: Protocol::TCP,
                    path: None,
                    endpoint: Some(format!("{}:8080", peer.name).into()),
                    dest_zone: peer.zone.as_deref().map(Into::into),
                    dest_node: Some(peer.node.as_str().into()),
                    resolver: None,
                    expect_deny: false,
                    good: u64::from(!cut),
                    bad: u64::from(cut) * 2,
                    held_bad: u64::from(cut) * 2,
                    silent: false,
                    reason: cut.then_some(FailureReason::TcpTimeout),
                    answered: u64::from(!cut),
                    slow: 0,
                    p99_us: Some(1_500),
                });
            }
        }
    }
    cells
}

/// Milliseconds per `localise`, the best of a few runs.
fn localise_ms(cells: &[Cell], cut_off: &str) -> f64 {
    let verdict = localise(cells, None, None, NOW).expect("a verdict");
    assert_eq!(verdict.scope, FailureScope::Node, "{verdict:?}");
    assert_eq!(verdict.sources, [cut_off]);
    (0..3)
        .map(|_| {
            let started = Instant::now();
            black_box(localise(black_box(cells), None, None, NOW));
            started.elapsed().as_secs_f64() * 1_000.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let mut reference = None;
    for n in [500, 2_000, 5_000] {
        let cells = mesh_cells(n);
        let ms = localise_ms(&cells, &node(n - 1));
        println!("verdict_mesh_{n}n_cells: {} cells", cells.len());
        println!("verdict_mesh_{n}n_localise: {ms:.1} ms");
        match reference {
            None => reference = Some((n, ms)),
            Some((n0, ms0)) => println!(
                "verdict_mesh_{n}n_localise_vs_{n0}n: {:.1} times ({:.1} times the cells)",
                ms / ms0,
                n as f64 / n0 as f64
            ),
        }
    }
}
