//! The configuration: a TOML file, optionally followed (after a NUL byte) by
//! `FNM_ESCALATOR__SECTION__KEY=value` lines standing for the environment.
#![no_main]

use fnm_escalator::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (file, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(file) = std::str::from_utf8(file) else {
        return; // reading the file as UTF-8 fails first, with its own message
    };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match Config::from_toml_with_env(Some(file), env) {
        Ok(config) => {
            assert!(config.validate().is_ok(), "a loaded config must be valid");
            let text = config.redacted_toml();
            assert!(!text.starts_with("# cannot render"), "{text}");
            let _ = config.notify_url();
            let _ = config.spool_dir();
            for net in &config.networks.ours {
                let _ = config.covering_length(net.addr());
            }
        }
        Err(ConfigError::Invalid(issues)) => {
            assert!(!issues.is_empty());
            for i in &issues {
                assert!(!i.key.is_empty() || !i.reason.trim().is_empty(), "{i:?}");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
