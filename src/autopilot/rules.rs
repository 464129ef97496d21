//! LiT's firewall rules: the JSON forms the Autopilot server sends (the Go structs of LiT's rule
//! managers), their conversion to and from `litrpc.RuleValue`, litd's per-rule parse checks and
//! its "sanity" checks against a feature's min and max (`firewall/rule_enforcer.go`,
//! `rules/*.go`). These functions copy litd's comparisons, holes included; the AddAutopilotSession policy (`policy.rs`) closes the
//! holes (NaN rates, `num_hours = 0`) before it calls them. The demo litd uses them too.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::proto::litrpc::{
    rule_value::Value, ChannelConstraint, ChannelPolicyBounds, ChannelRestrict, HistoryLimit,
    OnChainBudget, PeerRestrict, Rate, RateLimit, RuleValue,
};

/// Why a rule value is refused, in litd's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A rule this litd has no manager for.
    #[error("unknown rule {0}, please upgrade")]
    Unknown(String),
    /// The oneof variant does not match the rule.
    #[error("incorrect RuleValue type")]
    WrongType,
    /// A value litd refuses to parse.
    #[error("{0}")]
    Invalid(&'static str),
    /// A JSON form that does not decode (or encode).
    #[error("invalid {rule} value: {reason}")]
    Json {
        /// The rule.
        rule: String,
        /// The decoder's message.
        reason: String,
    },
}

/// `rate-limit`.
pub const RATE_LIMIT: &str = "rate-limit";
/// `channel-policy-bounds`.
pub const CHANNEL_POLICY_BOUNDS: &str = "channel-policy-bounds";
/// `history-limit`.
pub const HISTORY_LIMIT: &str = "history-limit";
/// `on-chain-budget`.
pub const ON_CHAIN_BUDGET: &str = "on-chain-budget";
/// `channel-restriction`.
pub const CHANNEL_RESTRICTION: &str = "channel-restriction";
/// `peer-restriction`.
pub const PEER_RESTRICTION: &str = "peer-restriction";
/// `channel-constraint`.
pub const CHANNEL_CONSTRAINT: &str = "channel-constraint";

/// Every rule name litd 0.17.2 has a manager for (`off_chain_budget` and `send_to_self` exist only
/// in the proto and are "unknown" to litd).
pub const KNOWN_RULES: &[&str] = &[
    RATE_LIMIT,
    CHANNEL_POLICY_BOUNDS,
    HISTORY_LIMIT,
    ON_CHAIN_BUDGET,
    CHANNEL_RESTRICTION,
    PEER_RESTRICTION,
    CHANNEL_CONSTRAINT,
];

/// Whether litd knows `name`.
pub fn is_known(name: &str) -> bool {
    KNOWN_RULES.contains(&name)
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct RateJson {
    #[serde(default)]
    iterations: u32,
    #[serde(default)]
    num_hours: u32,
}

// Go marshals `write_limit` before `read_limit`; both are pointers there (nil when missing).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct RateLimitJson {
    write_limit: Option<RateJson>,
    read_limit: Option<RateJson>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
struct ChannelPolicyBoundsJson {
    min_base_msat: u64,
    max_base_msat: u64,
    min_rate_ppm: u32,
    max_rate_ppm: u32,
    min_cltv_delta: u32,
    max_cltv_delta: u32,
    min_htlc_msat: u64,
    max_htlc_msat: u64,
}

// `start_date` is a Go time.Time: `omitempty` never omits a struct, so it is always written
// (the zero time as 0001-01-01T00:00:00Z). `duration` is a Go time.Duration (nanoseconds).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct HistoryLimitJson {
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    duration: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
struct OnChainBudgetJson {
    absolute_amt_sats: u64,
    max_sat_per_v_byte: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct ChannelRestrictJson {
    channel_deny_list: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct PeerRestrictJson {
    peer_deny_list: Vec<String>,
}

// The keys say msat but the values are sats (LiT quirk, kept).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
struct ChannelConstraintJson {
    min_capacity_msat: u64,
    max_capacity_msat: u64,
    max_push_sat: u64,
    private_allowed: bool,
    public_allowed: bool,
}

const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";
/// Unix seconds of Go's zero time; litd converts it to uint64 directly (the wrap is kept).
const GO_ZERO_UNIX: i64 = -62_135_596_800;
const NANOS: u64 = 1_000_000_000;

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn is_go_zero_start(s: &Option<String>) -> bool {
    s.as_deref()
        .is_none_or(|s| s.starts_with("0001-01-01T00:00:00"))
}

/// Parses a rule value in its JSON (Go struct) form into the proto form, as litd does when it
/// converts the Autopilot server's defaults and bounds.
pub fn from_json(name: &str, raw: &[u8]) -> Result<RuleValue, RuleError> {
    fn parse<'a, T: Deserialize<'a>>(name: &str, raw: &'a [u8]) -> Result<T, RuleError> {
        serde_json::from_slice(raw).map_err(|e| RuleError::Json {
            rule: name.to_owned(),
            reason: e.to_string(),
        })
    }
    let value = match name {
        RATE_LIMIT => {
            let v: RateLimitJson = parse(name, raw)?;
            let rate = |r: Option<RateJson>| {
                r.map(|r| Rate {
                    iterations: r.iterations,
                    num_hours: r.num_hours,
                })
            };
            Value::RateLimit(RateLimit {
                read_limit: rate(v.read_limit),
                write_limit: rate(v.write_limit),
            })
        }
        CHANNEL_POLICY_BOUNDS => {
            let v: ChannelPolicyBoundsJson = parse(name, raw)?;
            Value::ChanPolicyBounds(ChannelPolicyBounds {
                min_base_msat: v.min_base_msat,
                max_base_msat: v.max_base_msat,
                min_rate_ppm: v.min_rate_ppm,
                max_rate_ppm: v.max_rate_ppm,
                min_cltv_delta: v.min_cltv_delta,
                max_cltv_delta: v.max_cltv_delta,
                min_htlc_msat: v.min_htlc_msat,
                max_htlc_msat: v.max_htlc_msat,
            })
        }
        HISTORY_LIMIT => {
            let v: HistoryLimitJson = parse(name, raw)?;
            let start_time = if is_go_zero_start(&v.start_date) {
                GO_ZERO_UNIX as u64
            } else {
                let s = v.start_date.as_deref().unwrap_or_default();
                crate::macaroon::parse_rfc3339(s)
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs())
                    .ok_or_else(|| RuleError::Json {
                        rule: name.to_owned(),
                        reason: "bad start_date".into(),
                    })?
            };
            Value::HistoryLimit(HistoryLimit {
                start_time,
                duration: v.duration / NANOS,
            })
        }
        ON_CHAIN_BUDGET => {
            let v: OnChainBudgetJson = parse(name, raw)?;
            Value::OnChainBudget(OnChainBudget {
                absolute_amt_sats: v.absolute_amt_sats,
                max_sat_per_v_byte: v.max_sat_per_v_byte,
            })
        }
        CHANNEL_RESTRICTION => {
            let v: ChannelRestrictJson = parse(name, raw)?;
            Value::ChannelRestrict(ChannelRestrict {
                channel_ids: v.channel_deny_list,
            })
        }
        PEER_RESTRICTION => {
            let v: PeerRestrictJson = parse(name, raw)?;
            Value::PeerRestrict(PeerRestrict {
                peer_ids: v.peer_deny_list,
            })
        }
        CHANNEL_CONSTRAINT => {
            let v: ChannelConstraintJson = parse(name, raw)?;
            Value::ChannelConstraint(ChannelConstraint {
                min_capacity_sat: v.min_capacity_msat,
                max_capacity_sat: v.max_capacity_msat,
                max_push_sat: v.max_push_sat,
                private_allowed: v.private_allowed,
                public_allowed: v.public_allowed,
            })
        }
        other => return Err(RuleError::Unknown(other.to_owned())),
    };
    Ok(RuleValue { value: Some(value) })
}

/// The JSON (Go struct) form of a rule value, as litd writes it into the rules caveat.
pub fn to_json(name: &str, value: &RuleValue) -> Result<String, RuleError> {
    let enc = |r: Result<String, serde_json::Error>| {
        r.map_err(|e| RuleError::Json {
            rule: name.to_owned(),
            reason: e.to_string(),
        })
    };
    match (name, value.value.as_ref()) {
        (RATE_LIMIT, Some(Value::RateLimit(v))) => {
            let rate = |r: Option<Rate>| {
                r.map(|r| RateJson {
                    iterations: r.iterations,
                    num_hours: r.num_hours,
                })
            };
            enc(serde_json::to_string(&RateLimitJson {
                write_limit: rate(v.write_limit),
                read_limit: rate(v.read_limit),
            }))
        }
        (CHANNEL_POLICY_BOUNDS, Some(Value::ChanPolicyBounds(v))) => {
            enc(serde_json::to_string(&ChannelPolicyBoundsJson {
                min_base_msat: v.min_base_msat,
                max_base_msat: v.max_base_msat,
                min_rate_ppm: v.min_rate_ppm,
                max_rate_ppm: v.max_rate_ppm,
                min_cltv_delta: v.min_cltv_delta,
                max_cltv_delta: v.max_cltv_delta,
                min_htlc_msat: v.min_htlc_msat,
                max_htlc_msat: v.max_htlc_msat,
            }))
        }
        (HISTORY_LIMIT, Some(Value::HistoryLimit(v))) => {
            let start_date = if v.start_time == 0 || v.start_time == GO_ZERO_UNIX as u64 {
                GO_ZERO_TIME.to_string()
            } else {
                crate::macaroon::format_rfc3339(
                    UNIX_EPOCH + std::time::Duration::from_secs(v.start_time),
                )
            };
            enc(serde_json::to_string(&HistoryLimitJson {
                start_date: Some(start_date),
                duration: v.duration.saturating_mul(NANOS),
            }))
        }
        (ON_CHAIN_BUDGET, Some(Value::OnChainBudget(v))) => {
            enc(serde_json::to_string(&OnChainBudgetJson {
                absolute_amt_sats: v.absolute_amt_sats,
                max_sat_per_v_byte: v.max_sat_per_v_byte,
            }))
        }
        (CHANNEL_RESTRICTION, Some(Value::ChannelRestrict(v))) => {
            enc(serde_json::to_string(&ChannelRestrictJson {
                channel_deny_list: v.channel_ids.clone(),
            }))
        }
        (PEER_RESTRICTION, Some(Value::PeerRestrict(v))) => {
            enc(serde_json::to_string(&PeerRestrictJson {
                peer_deny_list: v.peer_ids.clone(),
            }))
        }
        (CHANNEL_CONSTRAINT, Some(Value::ChannelConstraint(v))) => {
            enc(serde_json::to_string(&ChannelConstraintJson {
                min_capacity_msat: v.min_capacity_sat,
                max_capacity_msat: v.max_capacity_sat,
                max_push_sat: v.max_push_sat,
                private_allowed: v.private_allowed,
                public_allowed: v.public_allowed,
            }))
        }
        (n, _) if !is_known(n) => Err(RuleError::Unknown(n.to_owned())),
        _ => Err(RuleError::WrongType),
    }
}

/// litd's per-rule checks on a caller's value: the oneof variant must match the rule
/// (`incorrect RuleValue type`) and the value must parse.
pub fn check_value(name: &str, value: &RuleValue) -> Result<(), RuleError> {
    if !is_known(name) {
        return Err(RuleError::Unknown(name.to_owned()));
    }
    match (name, value.value.as_ref()) {
        (RATE_LIMIT, Some(Value::RateLimit(v))) => {
            // litd dereferences both without a check (and would crash); the fake refuses.
            if v.read_limit.is_none() || v.write_limit.is_none() {
                return Err(RuleError::Invalid(
                    "rate-limit needs both read_limit and write_limit",
                ));
            }
            Ok(())
        }
        (HISTORY_LIMIT, Some(Value::HistoryLimit(v))) => {
            if v.start_time != 0 && v.duration != 0 {
                return Err(RuleError::Invalid(
                    "only one of start_time or duration may be set",
                ));
            }
            Ok(())
        }
        (CHANNEL_RESTRICTION, Some(Value::ChannelRestrict(v))) => {
            if v.channel_ids.is_empty() {
                return Err(RuleError::Invalid("channel deny list cannot be empty"));
            }
            Ok(())
        }
        (PEER_RESTRICTION, Some(Value::PeerRestrict(v))) => {
            if v.peer_ids.is_empty() {
                return Err(RuleError::Invalid("peer deny list cannot be empty"));
            }
            Ok(())
        }
        (CHANNEL_POLICY_BOUNDS, Some(Value::ChanPolicyBounds(_)))
        | (ON_CHAIN_BUDGET, Some(Value::OnChainBudget(_)))
        | (CHANNEL_CONSTRAINT, Some(Value::ChannelConstraint(_))) => Ok(()),
        _ => Err(RuleError::WrongType),
    }
}

fn rate(r: Option<Rate>) -> f64 {
    let r = r.unwrap_or_default();
    f64::from(r.iterations) / f64::from(r.num_hours)
}

fn history_start(v: &HistoryLimit, now: i64) -> i64 {
    if v.duration != 0 {
        now - v.duration as i64
    } else {
        v.start_time as i64
    }
}

/// `(name, value, min, max)` of each named numeric field of three rule values, as `u64`.
macro_rules! between {
    ($v:ident, $lo:ident, $hi:ident; $($field:ident),+) => {
        [$((
            stringify!($field),
            u64::from($v.$field),
            u64::from($lo.$field),
            u64::from($hi.$field),
        )),+]
    };
}

/// Each `(name, value, min, max)` has its value within its bounds; the first that is not is
/// named.
fn within<const N: usize>(fields: [(&str, u64, u64, u64); N]) -> Result<(), String> {
    match fields.iter().find(|(_, v, lo, hi)| v < lo || v > hi) {
        Some((field, ..)) => Err(format!("{field} is not between the min and max")),
        None => Ok(()),
    }
}

/// litd's `VerifySane`: `value` against the server's `min` and `max` for one rule. The error is
/// the reason text only; the caller wraps it in litd's `rule value for ... not valid` sentence.
pub fn check_sane(
    name: &str,
    value: &RuleValue,
    min: &RuleValue,
    max: &RuleValue,
) -> Result<(), String> {
    use Value as V;
    match (value.value.as_ref(), min.value.as_ref(), max.value.as_ref()) {
        (Some(V::RateLimit(v)), Some(V::RateLimit(lo)), Some(V::RateLimit(hi))) => {
            // Rates compared as floats, as litd does: 0/0 is NaN and passes (kept on purpose).
            let (r, l, h) = (rate(v.read_limit), rate(lo.read_limit), rate(hi.read_limit));
            if r < l || r > h {
                return Err("read limit is not between the min and max".into());
            }
            let (w, l, h) = (
                rate(v.write_limit),
                rate(lo.write_limit),
                rate(hi.write_limit),
            );
            if w < l || w > h {
                return Err("write limit is not between the min and max".into());
            }
            Ok(())
        }
        (
            Some(V::ChanPolicyBounds(v)),
            Some(V::ChanPolicyBounds(lo)),
            Some(V::ChanPolicyBounds(hi)),
        ) => within(between!(
            v,
            lo,
            hi;
            min_base_msat,
            max_base_msat,
            min_rate_ppm,
            max_rate_ppm,
            min_cltv_delta,
            max_cltv_delta,
            min_htlc_msat,
            max_htlc_msat
        )),
        (Some(V::HistoryLimit(v)), Some(V::HistoryLimit(lo)), _) => {
            let now = now_unix();
            if history_start(v, now) >= history_start(lo, now) {
                return Err("history limit must allow at least the minimum history".into());
            }
            Ok(())
        }
        (Some(V::OnChainBudget(v)), Some(V::OnChainBudget(lo)), _) => {
            if v.absolute_amt_sats < lo.absolute_amt_sats
                || v.max_sat_per_v_byte < lo.max_sat_per_v_byte
            {
                return Err("on-chain budget is below the minimum".into());
            }
            Ok(())
        }
        (
            Some(V::ChannelConstraint(v)),
            Some(V::ChannelConstraint(lo)),
            Some(V::ChannelConstraint(hi)),
        ) => {
            within(between!(v, lo, hi; min_capacity_sat, max_capacity_sat, max_push_sat))?;
            if (v.private_allowed && !hi.private_allowed)
                || (!v.private_allowed && lo.private_allowed)
            {
                return Err("private channels allowance is outside the bounds".into());
            }
            if (v.public_allowed && !hi.public_allowed) || (!v.public_allowed && lo.public_allowed)
            {
                return Err("public channels allowance is outside the bounds".into());
            }
            if !v.private_allowed && !v.public_allowed {
                return Err("at least one of private or public channels must be allowed".into());
            }
            Ok(())
        }
        // Restriction lists have no sanity check in litd.
        (Some(V::ChannelRestrict(_)), ..) | (Some(V::PeerRestrict(_)), ..) => Ok(()),
        _ => Err(format!("malformed bounds for {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rl(wi: u32, wh: u32, ri: u32, rh: u32) -> RuleValue {
        RuleValue {
            value: Some(Value::RateLimit(RateLimit {
                read_limit: Some(Rate {
                    iterations: ri,
                    num_hours: rh,
                }),
                write_limit: Some(Rate {
                    iterations: wi,
                    num_hours: wh,
                }),
            })),
        }
    }

    #[test]
    fn rate_limit_json_round_trip_keeps_go_key_order() {
        let v = from_json(RATE_LIMIT, br#"{"write_limit":{"iterations":1,"num_hours":1},"read_limit":{"iterations":10,"num_hours":1}}"#).unwrap();
        assert_eq!(v, rl(1, 1, 10, 1));
        assert_eq!(
            to_json(RATE_LIMIT, &v).unwrap(),
            r#"{"write_limit":{"iterations":1,"num_hours":1},"read_limit":{"iterations":10,"num_hours":1}}"#
        );
    }

    #[test]
    fn rate_limit_sanity_compares_rates() {
        let (lo, hi) = (rl(0, 1, 1, 1), rl(10, 1, 1000, 1));
        assert!(check_sane(RATE_LIMIT, &rl(10, 10, 1, 1), &lo, &hi).is_ok());
        assert_eq!(
            check_sane(RATE_LIMIT, &rl(1, 1, 2000, 1), &lo, &hi).unwrap_err(),
            "read limit is not between the min and max"
        );
        assert_eq!(
            check_sane(RATE_LIMIT, &rl(11, 1, 10, 1), &lo, &hi).unwrap_err(),
            "write limit is not between the min and max"
        );
        // 0/0 is NaN and passes, as in litd.
        assert!(check_sane(RATE_LIMIT, &rl(0, 0, 0, 0), &lo, &hi).is_ok());
    }

    #[test]
    fn history_limit_zero_start_wraps_like_litd() {
        let v = from_json(
            HISTORY_LIMIT,
            br#"{"start_date":"0001-01-01T00:00:00Z","duration":86400000000000}"#,
        )
        .unwrap();
        let Some(Value::HistoryLimit(h)) = v.value else {
            panic!("variant")
        };
        assert_eq!(h.start_time, 18_446_744_011_573_954_816);
        assert_eq!(h.duration, 86_400);
    }

    #[test]
    fn wrong_variant_is_refused() {
        let v = RuleValue {
            value: Some(Value::OnChainBudget(OnChainBudget::default())),
        };
        let e = check_value(RATE_LIMIT, &v).unwrap_err();
        assert_eq!(e, RuleError::WrongType);
        assert_eq!(e.to_string(), "incorrect RuleValue type");
        assert_eq!(
            check_value("off-chain-budget", &v).unwrap_err().to_string(),
            "unknown rule off-chain-budget, please upgrade"
        );
    }
}
