//! `lit.conf` as `litgate init` reads it (`init::LitConf`): an operator's file, but written by
//! hand and by other tools, so any text must parse or be refused naming its line.

use std::path::Path;

use proptest::{collection, prelude::*};

use super::config;
use crate::init::{InitError, LitConf};

/// One line to write: a `key=value` under a section, or noise a reader must skip.
#[derive(Debug, Clone)]
enum Line {
    Section(String),
    Pair {
        key: String,
        value: String,
        quoted: bool,
        pad: bool,
    },
    Comment(String),
    Blank,
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        1 => prop_oneof![
            Just("Application Options".to_string()),
            Just("application options".to_string()),
            "[A-Za-z][A-Za-z ]{0,8}[A-Za-z]",
        ]
        .prop_map(Line::Section),
        5 => (
            "[A-Za-z][A-Za-z0-9.]{0,10}",
            "([A-Za-z0-9_./:=~-]([A-Za-z0-9_./:=~ -]{0,10}[A-Za-z0-9_./:=~-])?)?",
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(key, value, quoted, pad)| Line::Pair { key, value, quoted, pad }),
        1 => ("[#;]", "\\PC{0,10}").prop_map(|(c, t)| Line::Comment(format!("{c}{t}"))),
        1 => Just(Line::Blank),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Written lines read back: every key (lower-cased, with its section's namespace) has the
    /// last value written for it, quotes and padding removed; comments and blanks skipped.
    #[test]
    fn lit_conf_reads_what_was_written(lines in collection::vec(line(), 0..12), crlf in any::<bool>()) {
        let mut text = String::new();
        let mut namespace = String::new();
        let mut expected = std::collections::BTreeMap::new();
        for l in &lines {
            match l {
                Line::Section(s) => {
                    text += &format!("[{s}]");
                    let s = s.to_ascii_lowercase();
                    namespace = if s == "application options" { String::new() } else { format!("{s}.") };
                }
                Line::Pair { key, value, quoted, pad } => {
                    let v = if *quoted { format!("\"{value}\"") } else { value.clone() };
                    text += &if *pad { format!("  {key} = {v}\t") } else { format!("{key}={v}") };
                    expected.insert(format!("{namespace}{}", key.to_ascii_lowercase()), value.clone());
                }
                Line::Comment(c) => text += c,
                Line::Blank => text += "   ",
            }
            text += if crlf { "\r\n" } else { "\n" };
        }
        let conf = LitConf::parse(&text, Path::new("lit.conf")).unwrap();
        for (k, v) in &expected {
            prop_assert_eq!(conf.get(k), Some(v.as_str()), "key {}", k);
            prop_assert_eq!(conf.flag(k), matches!(v.to_ascii_lowercase().as_str(), "" | "true" | "1"));
        }
    }

    /// Any text is a configuration or a refusal naming a line that exists (and what it holds).
    #[test]
    fn any_text_parses_or_names_its_line(text in "\\PC{0,64}(\n\\PC{0,32}){0,4}") {
        match LitConf::parse(&text, Path::new("lit.conf")) {
            Ok(_) => {}
            Err(InitError::LitConf { line, text: held, .. }) => {
                let lines: Vec<&str> = text.lines().collect();
                prop_assert!(line >= 1 && line <= lines.len());
                prop_assert_eq!(lines[line - 1], held.as_str());
            }
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}
