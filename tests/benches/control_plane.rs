//! What the test bed costs, behind the choice of one control plane per test binary with a
//! namespace per test: starting a plane versus giving a test its own namespace on a running one.
//! Prints `name: value unit` lines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark reports on stdout

use std::sync::Arc;
use std::time::Instant;

use netslo_tests::control_plane::{self, ControlPlane, StartOptions, TestNamespace, block_on};

const NAMESPACES: u32 = 10;

fn main() {
    // Locating (or building) the binaries is not part of a start.
    control_plane::binaries().expect("control-plane binaries");
    let started = Instant::now();
    let plane = Arc::new(ControlPlane::start(StartOptions::default()).expect("control plane"));
    let start_s = started.elapsed().as_secs_f64();

    let per_namespace_ms = block_on({
        let plane = plane.clone();
        async move {
            let started = Instant::now();
            let mut namespaces = Vec::new();
            for _ in 0..NAMESPACES {
                namespaces.push(
                    TestNamespace::create(&plane, "bench")
                        .await
                        .expect("namespace"),
                );
            }
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(NAMESPACES);
            drop(namespaces);
            elapsed_ms
        }
    });
    println!("control_plane_start: {start_s:.2} s");
    println!("test_namespace_create: {per_namespace_ms:.1} ms");
    println!(
        "plane_start_over_namespace_create: {:.0} x",
        start_s * 1000.0 / per_namespace_ms
    );
}
