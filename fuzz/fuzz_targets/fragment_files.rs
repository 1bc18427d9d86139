//! What a node reads from its disk: fragment headers, fragment file names
//! and the scrub state file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_node::{FRAGMENT_HEADER_LEN, FragmentHeader, parse_fragment_name, parse_scrub_state};

fuzz_target!(|data: &[u8]| {
    if let Some(raw) = data.get(..FRAGMENT_HEADER_LEN) {
        let raw: [u8; FRAGMENT_HEADER_LEN] = raw.try_into().expect("64 bytes");
        if let Ok(h) = FragmentHeader::decode(&raw) {
            assert_eq!(FragmentHeader::decode(&h.encode()), Ok(h));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_fragment_name(text);
        let _ = parse_scrub_state(text);
    }
});
