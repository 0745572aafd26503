//! No input panics the config parsers: random text, and random edits of a valid file.

use proptest::prelude::*;
use twinhub::SdkConfig;
use twinhub::config::connstr::{parse_event_hubs, parse_iot_hub};
use twinhub::config::units::{parse_budget, parse_duration, parse_size};

const VALID: &str = include_str!("../../examples/config/design.toml");

/// Strings near the grammar: digits, units, separators and multi-byte characters, so the
/// parsers' edge cases (empty parts, overflow, char boundaries) are reached often.
fn near_grammar() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("0"),
            Just("9"),
            Just("18446744073709551615"),
            Just("MiB"),
            Just("KB"),
            Just("ms"),
            Just("m"),
            Just("d"),
            Just("/"),
            Just(" "),
            Just(";"),
            Just("="),
            Just("[::1]"),
            Just(":"),
            Just("Endpoint=sb://"),
            Just("EntityPath="),
            Just("HostName="),
            Just("SharedAccessKey="),
            Just("é"),
            Just("\u{1F600}"),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn units_never_panic(s in "\\PC{0,24}", t in near_grammar()) {
        for input in [&s, &t] {
            let _ = parse_size(input);
            let _ = parse_duration(input);
            let _ = parse_budget(input);
        }
    }

    #[test]
    fn connection_strings_never_panic(s in "\\PC{0,64}", t in near_grammar()) {
        for input in [&s, &t] {
            let _ = parse_event_hubs(input);
            let _ = parse_iot_hub(input);
        }
    }

    #[test]
    fn random_toml_never_panics(s in "\\PC{0,200}") {
        let _ = SdkConfig::from_toml_str_with_env(&s, |_| None);
    }

    /// A valid file with one byte range replaced: mostly near-valid TOML, so the value and
    /// key checks run on odd values rather than stopping at syntax.
    #[test]
    fn edited_valid_file_never_panics(at in 0usize..2000, len in 0usize..8, with in near_grammar()) {
        let mut start = at.min(VALID.len());
        while !VALID.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + len).min(VALID.len());
        while !VALID.is_char_boundary(end) {
            end -= 1;
        }
        let text = format!("{}{}{}", &VALID[..start], with, &VALID[end..]);
        if let Err(e) = SdkConfig::from_toml_str_with_env(&text, |_| None) {
            // Every error that is not about the whole file says where.
            let shown = e.to_string();
            prop_assert!(!shown.is_empty());
            prop_assert!(e.line.is_some() || e.key.is_some(), "{}", shown);
        }
    }
}

/// Deep nesting is refused by the TOML parser's depth limit, not by a stack overflow.
#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for open in ["[", "{a="] {
        let text = format!("device_id = \"d\"\nx = {}\n", open.repeat(50_000));
        let e = SdkConfig::from_toml_str_with_env(&text, |_| None).unwrap_err();
        assert!(e.line.is_some(), "{e}");
    }
}
