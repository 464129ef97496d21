//! `[privacy]`: the privacy-mapper flags no session may carry, and whether sessions without
//! the mapper are allowed. Serde and validation only; the privacy checks read the values.

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
}

impl PrivacyConfig {
    pub(crate) fn validate(&self, err: &mut Report<'_>) {
        for (i, name) in self.deny_clear.iter().enumerate() {
            if !NAMES.contains(&name.as_str()) {
                err(
                    &format!("privacy.deny_clear[{i}]"),
                    format!("unknown privacy flag {name:?}; known: {}", NAMES.join(", ")),
                );
            }
        }
    }
}
