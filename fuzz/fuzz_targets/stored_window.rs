//! A stored SLO window and its counted-bucket watermarks as the operator reads them back from
//! a ConfigMap at start: hostile bytes give an error, and whatever decodes survives another
//! write and read unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netslo_operator::settled::Settled;
use netslo_operator::slo::window::History;

fuzz_target!(|data: &[u8]| {
    if let Ok(history) = History::decode(data) {
        assert_eq!(History::decode(&history.encode()).as_ref(), Ok(&history));
    }
    if let Ok(settled) = Settled::decode(data) {
        assert_eq!(Settled::decode(&settled.encode()).as_ref(), Ok(&settled));
    }
});
