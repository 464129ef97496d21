//! Privacy-mapper flags: what they are ([`flags`]), the operator's `[privacy]` section
//! ([`config`]), and the one checker that holds a session's flags to it ([`FlagPolicy`]). The
//! public face (AddAutopilotSession) and the relay (RegisterSession) both ask it, so a flag
//! refused on one door is refused on the other with the same code and words. Pure.

pub(crate) mod config;
pub mod flags;

use tonic::Code;

/// Why a session's privacy flags are refused. Names the flags, never anything else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagRefusal {
    /// The session asks for a flag bit litd does not know.
    #[error("privacy_flags: unknown privacy flag bit {0}")]
    UnknownBit(u64),
    /// A feature needs a flag bit this litd does not know.
    #[error(
        "features: {feature} needs privacy flag bit {bit}, which this litd does not know; upgrade litd"
    )]
    FeatureNeedsUpgrade {
        /// The feature.
        feature: String,
        /// The lowest unknown bit.
        bit: u64,
    },
    /// A feature needs flags `[privacy] deny_clear` forbids.
    #[error("features: {feature} needs {}, which [privacy] deny_clear forbids", flags::text(*.flags))]
    FeatureDenied {
        /// The feature.
        feature: String,
        /// The forbidden flags it needs.
        flags: u64,
    },
    /// The session asks for flags `[privacy] deny_clear` forbids.
    #[error("privacy_flags: {} is forbidden by [privacy] deny_clear", flags::text(*.0))]
    Denied(u64),
    /// The session asks for less privacy than its features need.
    #[error(
        "privacy_flags: {} asks for less privacy than the requested features need ({})",
        flags::text(*.extra),
        flags::describe(*.needed)
    )]
    NotSubset {
        /// The flags beyond what the features need.
        extra: u64,
        /// What the features need together.
        needed: u64,
    },
}

impl FlagRefusal {
    /// The gRPC code: a malformed request (an unknown bit) or a policy refusal.
    pub fn code(&self) -> Code {
        match self {
            FlagRefusal::UnknownBit(_) => Code::InvalidArgument,
            _ => Code::FailedPrecondition,
        }
    }

    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FlagRefusal::UnknownBit(_) => "unknown_privacy_flag",
            FlagRefusal::FeatureNeedsUpgrade { .. } => "feature_needs_upgrade",
            FlagRefusal::FeatureDenied { .. } | FlagRefusal::Denied(_) => "denied_flag",
            FlagRefusal::NotSubset { .. } => "flags_not_subset",
        }
    }
}

/// `[privacy] deny_clear` as a bitmask, and the checks every door applies with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagPolicy {
    deny: u64,
}

impl FlagPolicy {
    /// The policy of `[privacy] deny_clear` (names already validated).
    pub fn new(deny_clear: &[String]) -> Self {
        FlagPolicy {
            deny: flags::mask(deny_clear),
        }
    }

    /// The session's flags name only bits litd knows.
    pub fn check_known(&self, session: u64) -> Result<(), FlagRefusal> {
        flags::unknown_bit(session).map_or(Ok(()), |bit| Err(FlagRefusal::UnknownBit(bit)))
    }

    /// A requested feature's flags: known to this litd, none forbidden.
    pub fn check_feature(&self, feature: &str, needs: u64) -> Result<(), FlagRefusal> {
        if let Some(bit) = flags::unknown_bit(needs) {
            return Err(FlagRefusal::FeatureNeedsUpgrade {
                feature: feature.to_owned(),
                bit,
            });
        }
        match needs & self.deny {
            0 => Ok(()),
            denied => Err(FlagRefusal::FeatureDenied {
                feature: feature.to_owned(),
                flags: denied,
            }),
        }
    }

    /// The session's flags: known, none forbidden, none beyond what its features `need`
    /// together.
    pub fn check_session(&self, session: u64, needed: u64) -> Result<(), FlagRefusal> {
        self.check_known(session)?;
        let denied = session & self.deny;
        if denied != 0 {
            return Err(FlagRefusal::Denied(denied));
        }
        match session & !needed {
            0 => Ok(()),
            extra => Err(FlagRefusal::NotSubset { extra, needed }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_checker_for_every_door() {
        let p = FlagPolicy::new(&["ClearNetworkAddresses".into()]);
        assert_eq!(p.check_known(0x300), Err(FlagRefusal::UnknownBit(8)));
        assert_eq!(
            p.check_feature("AutoOpen", 0x81).unwrap_err().to_string(),
            "features: AutoOpen needs ClearNetworkAddresses, which [privacy] deny_clear forbids"
        );
        assert_eq!(
            p.check_feature("X", 0x100),
            Err(FlagRefusal::FeatureNeedsUpgrade {
                feature: "X".into(),
                bit: 8
            })
        );
        assert!(p.check_session(0x04, 0x0c).is_ok());
        let e = p.check_session(0x01, 0x0c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "privacy_flags: ClearPubkeys asks for less privacy than the requested features need (ClearChanIDs|ClearTimeStamps)"
        );
        assert_eq!(
            (e.code(), e.reason()),
            (Code::FailedPrecondition, "flags_not_subset")
        );
        assert_eq!(
            p.check_session(0x01, 0).unwrap_err().to_string(),
            "privacy_flags: ClearPubkeys asks for less privacy than the requested features need (full privacy)"
        );
        let denied = p.check_session(0x80, 0x80).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "privacy_flags: ClearNetworkAddresses is forbidden by [privacy] deny_clear"
        );
        assert_eq!(
            p.check_session(0x200, 0).unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}
