//! `RUSTC_BOOTSTRAP=1 cargo fuzz run config` (from crates/config): whatever an operator
//! writes in the file or the `FINCODE_SIDECAR__*` overlay, loading answers with a config
//! or a list of problems (never panics), a problem never echoes the value of a secret
//! variable, and a config that loads writes itself back out to a file that loads to the
//! same config.
//!
//! Input layout: `NAME=value` environment lines, a line `---`, then the TOML file. The
//! environment always holds a canary secret in `FUZZ_SECRET`, which the input may name.
#![no_main]

use fincode_config::{Config, Env};
use libfuzzer_sys::fuzz_target;

const CANARY: &str = "canary-secret-4d1f9a";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // An input that spells the canary itself may see it echoed; that is its own text.
    if text.contains(CANARY) {
        return;
    }
    let (env_part, toml) = text.split_once("\n---\n").unwrap_or(("", text));
    let mut pairs: Vec<(String, String)> = env_part
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    pairs.push(("FUZZ_SECRET".to_owned(), CANARY.to_owned()));
    let env = Env::from_pairs(pairs);
    match Config::from_toml_str(toml, &env) {
        Ok((config, warnings)) => {
            for warning in &warnings {
                assert!(!warning.to_string().contains(CANARY), "{warning}");
            }
            for problem in config.check_environment(&env) {
                assert!(!problem.to_string().contains(CANARY), "{problem}");
            }
            let written = config.to_toml_string();
            let nothing: [(String, String); 0] = [];
            let (again, _) = Config::from_toml_str(&written, &Env::from_pairs(nothing))
                .unwrap_or_else(|err| {
                    panic!("a loaded config wrote a file that does not load:\n{written}\n{err}")
                });
            assert_eq!(
                written,
                again.to_toml_string(),
                "round trip changed the config"
            );
        }
        Err(err) => {
            assert!(!err.to_string().contains(CANARY), "{err}");
        }
    }
});
