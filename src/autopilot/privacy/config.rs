//! `[privacy]`: the privacy-mapper flags no session may carry, whether sessions without the
//! mapper are allowed, and how feature configs are inspected (which features are trusted with
//! whatever their config holds, and whether the relay refuses or only warns). Serde and
//! validation only; the privacy checks read the values.

use serde::Deserialize;

use super::flags::NAMES;
use crate::values::Report;

/// `[privacy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Flag names no session may carry.
    pub deny_clear: Vec<String>,
    /// Whether `no_privacy_mapper = true` sessions are allowed.
    pub allow_no_privacy_mapper: bool,
    /// Features whose config is not inspected: the operator trusts their Autopilot server with
    /// whatever the config holds. Neither face refuses their configs; the relay still records
    /// what they showed the server.
    pub skip_config_inspection: Vec<String>,
    /// What the relay does with a `RegisterSession` whose feature config would reveal an
    /// identifier the flags keep private (or cannot be inspected).
    pub relay_config_check: RelayConfigCheck,
}

/// `[privacy] relay_config_check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayConfigCheck {
    /// Refuse the registration before the Autopilot server sees it.
    #[default]
    Refuse,
    /// Forward it, log a warning, count it, and record the leak in the ledger.
    Warn,
}

impl PrivacyConfig {
    /// Whether `feature`'s config is inspected (it is not listed in `skip_config_inspection`).
    pub fn inspects(&self, feature: &str) -> bool {
        !self.skip_config_inspection.iter().any(|f| f == feature)
    }

    pub(crate) fn validate(&self, err: &mut Report<'_>) {
        for (i, name) in self.deny_clear.iter().enumerate() {
            if !NAMES.contains(&name.as_str()) {
                err(
                    &format!("privacy.deny_clear[{i}]"),
                    format!("unknown privacy flag {name:?}; known: {}", NAMES.join(", ")),
                );
            }
        }
        for (i, name) in self.skip_config_inspection.iter().enumerate() {
            let key = format!("privacy.skip_config_inspection[{i}]");
            if name.trim().is_empty() {
                err(&key, "must be a feature name, not empty".into());
            } else if self.skip_config_inspection[..i].contains(name) {
                err(&key, format!("{name:?} is listed twice"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(cfg: &PrivacyConfig) -> Vec<(String, String)> {
        let mut out = Vec::new();
        cfg.validate(&mut |k: &str, r: String| out.push((k.to_owned(), r)));
        out
    }

    #[test]
    fn defaults_inspect_everything_and_refuse() {
        let cfg: PrivacyConfig = toml::from_str("").unwrap();
        assert!(cfg.inspects("AutoFees"));
        assert_eq!(cfg.relay_config_check, RelayConfigCheck::Refuse);
        assert!(problems(&cfg).is_empty());
    }

    #[test]
    fn keys_are_read_and_checked() {
        let cfg: PrivacyConfig = toml::from_str(
            "skip_config_inspection = [\"AutoFees\", \"\", \"AutoFees\"]\nrelay_config_check = \"warn\"\n",
        )
        .unwrap();
        assert!(!cfg.inspects("AutoFees") && cfg.inspects("AutoOpen"));
        assert_eq!(cfg.relay_config_check, RelayConfigCheck::Warn);
        let keys: Vec<String> = problems(&cfg).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "privacy.skip_config_inspection[1]",
                "privacy.skip_config_inspection[2]"
            ]
        );
        let e = toml::from_str::<PrivacyConfig>("relay_config_check = \"ignore\"\n").unwrap_err();
        assert!(e.message().contains("unknown variant `ignore`"), "{e}");
    }
}
