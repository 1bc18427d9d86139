//! The cluster file (`cluster.toml`), as an operator may have mangled it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_sdk::ClusterConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(cfg) = ClusterConfig::parse(text, std::path::Path::new("/nonexistent"))
    {
        let _ = cfg.default_policy();
        let _ = cfg.to_toml();
    }
});
