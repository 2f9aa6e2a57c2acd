//! An assignment as the agent reads it from the operator: JSON, validation, compilation into
//! probe jobs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netslo_protocol::spec::Assignment;

fuzz_target!(|data: &[u8]| {
    if let Ok(assignment) = Assignment::from_json(data) {
        let _ = netslo_agent::engine::compile(&assignment, "node-a");
    }
});
