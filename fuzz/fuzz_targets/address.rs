//! Address normalisation and the destination guard: every spelling of an address is judged
//! as the address it denotes.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use netslo_protocol::guard::{AddressPolicy, normalise_ip};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ip) = normalise_ip(text) {
        // The canonical text reads back as the same address.
        assert_eq!(normalise_ip(&ip.to_string()), Some(ip), "{text:?}");
        let policy = AddressPolicy::default();
        let _ = policy.check(SocketAddr::new(ip, 80));
    }
});
