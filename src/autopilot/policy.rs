//! The AddAutopilotSession policy (`docs/design.md`, "AddAutopilotSession"): everything litgate
//! checks and decides about a request before litd sees it, down to what each feature's config
//! would show the Autopilot server (`feature_config`). Pure: it takes the decoded request, the
//! feature catalogue (its rule bounds already parsed, `catalogue::FeatureSet`) and (for linked
//! sessions) what litd says about the linked session, and
//! returns either a refusal naming the field and the reason, or the decision — the values to
//! write into the request explicitly (privacy flags, capped rate limits) and what to record. It
//! never performs I/O; the handler (`add_session.rs`) does.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;

use tonic::Code;

use super::{
    catalogue::FeatureSet,
    config::RulesConfig,
    feature_config::{self, FeatureConfigRefusal, Privacy},
    privacy::{self, config::PrivacyConfig, FlagPolicy, FlagRefusal},
    rules::{self, RuleError, RATE_LIMIT},
};
use crate::{
    error::Error,
    proto::litrpc::{rule_value::Value, AddAutopilotSessionRequest, Rate, RateLimit, RuleValue},
    values::Rate as CapRate,
};

/// A refusal: the error for the caller and a bounded reason label for metrics.
#[derive(Debug)]
pub struct Refusal {
    /// Metric label, e.g. `unknown_feature`.
    pub reason: &'static str,
    /// What the caller gets.
    pub error: Error,
}

fn refuse(reason: &'static str, code: Code, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        error: Error::client(code, message),
    }
}

fn flag_refusal(r: FlagRefusal) -> Refusal {
    refuse(r.reason(), r.code(), r.to_string())
}

fn config_refusal(r: FeatureConfigRefusal) -> Refusal {
    refuse(r.reason.reason(), r.reason.code(), r.to_string())
}

fn invalid(reason: &'static str, message: impl Into<String>) -> Refusal {
    refuse(reason, Code::InvalidArgument, message)
}

fn denied(reason: &'static str, message: impl Into<String>) -> Refusal {
    refuse(reason, Code::FailedPrecondition, message)
}

/// What litd reports about the session a request links to.
#[derive(Debug, Clone)]
pub struct LinkedSession {
    /// Its group id equals its own id.
    pub first_in_group: bool,
    /// Its privacy flags as litd stored them.
    pub privacy_flags: u64,
}

/// The policy's decision for an approved request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Flags to write (`privacy_flags`, `privacy_flags_set = true`); `None` when the session
    /// has no privacy mapper (litd refuses flags then).
    pub write_flags: Option<u64>,
    /// The flags approved (what RegisterSession must carry).
    pub approved_flags: u64,
    /// Rate-limit values to write per feature (absent or capped in the request).
    pub rate_limits: BTreeMap<String, RuleValue>,
    /// Requested feature names, sorted.
    pub features: Vec<String>,
    /// Whether the privacy mapper is on.
    pub privacy: bool,
}

/// The policy in force: read once per call, swapped whole by a config reload (a call already
/// deciding finishes under the policy it started with).
#[derive(Debug, Clone)]
pub struct LivePolicy(Arc<ArcSwap<Policy>>);

impl LivePolicy {
    /// Starts with `policy`.
    pub fn new(policy: Policy) -> Self {
        LivePolicy(Arc::new(ArcSwap::from_pointee(policy)))
    }

    /// The policy now.
    pub fn current(&self) -> Arc<Policy> {
        self.0.load_full()
    }

    /// Puts `policy` in force for the calls that start from now on.
    pub fn set(&self, policy: Policy) {
        self.0.store(Arc::new(policy));
    }
}

/// The operator's policy.
#[derive(Debug, Clone)]
pub struct Policy {
    caps: RulesConfig,
    privacy: PrivacyConfig,
    flags: FlagPolicy,
}

impl Policy {
    /// Builds the policy from `[autopilot.rules]` and `[privacy]` (already validated).
    pub fn new(caps: RulesConfig, privacy: PrivacyConfig) -> Self {
        let flags = FlagPolicy::new(&privacy.deny_clear);
        Policy {
            caps,
            privacy,
            flags,
        }
    }

    /// Checks the parts that need neither the catalogue nor litd (cheap; run first so that a
    /// malformed request costs nothing else).
    pub fn check_request(
        &self,
        req: &AddAutopilotSessionRequest,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        if req
            .session_rules
            .as_ref()
            .is_some_and(|r| !r.rules.is_empty())
        {
            return Err(invalid(
                "session_rules",
                "session_rules: litd ignores top-level session rules; put rules under features.<name>.rules",
            ));
        }
        if req.features.is_empty() {
            return Err(invalid(
                "no_features",
                "features: must include at least one feature",
            ));
        }
        let now_s = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if req.expiry_timestamp_seconds <= now_s {
            return Err(invalid(
                "expiry_past",
                format!(
                    "expiry_timestamp_seconds: {} is not in the future",
                    req.expiry_timestamp_seconds
                ),
            ));
        }
        let max = now_s.saturating_add(self.caps.max_expiry.as_secs());
        if req.expiry_timestamp_seconds > max {
            return Err(denied(
                "expiry_too_far",
                format!(
                    "expiry_timestamp_seconds: {} is more than {} from now, beyond [autopilot.rules] max_expiry",
                    req.expiry_timestamp_seconds,
                    humantime::format_duration(self.caps.max_expiry)
                ),
            ));
        }
        if req.no_privacy_mapper && req.privacy_flags_set {
            return Err(invalid(
                "flags_without_mapper",
                "privacy_flags: privacy flags can only be set when the privacy mapper is enabled (no_privacy_mapper is true)",
            ));
        }
        if req.privacy_flags_set {
            self.flags
                .check_known(req.privacy_flags)
                .map_err(flag_refusal)?;
        }
        if !req.linked_group_id.is_empty() && req.linked_group_id.len() != 4 {
            return Err(invalid(
                "bad_group_id",
                format!(
                    "linked_group_id: must be empty or exactly 4 bytes, got {}",
                    req.linked_group_id.len()
                ),
            ));
        }
        if req.no_privacy_mapper && !self.privacy.allow_no_privacy_mapper {
            return Err(denied(
                "no_privacy_mapper",
                "no_privacy_mapper: sessions without the privacy mapper are not allowed ([privacy] allow_no_privacy_mapper = false)",
            ));
        }
        for (name, fc) in &req.features {
            for (rule, value) in fc.rules.iter().flat_map(|r| r.rules.iter()) {
                check_rule_value(name, rule, value)?;
            }
        }
        Ok(())
    }

    /// Decides a request that passed [`Policy::check_request`], against the catalogue and, for a
    /// linked session, what litd reports about it.
    pub fn decide(
        &self,
        req: &AddAutopilotSessionRequest,
        catalogue: &FeatureSet,
        linked: Option<&LinkedSession>,
    ) -> Result<Decision, Refusal> {
        let mut names: Vec<&String> = req.features.keys().collect();
        names.sort();
        let mut union = 0u64;
        let mut rate_limits = BTreeMap::new();
        for name in &names {
            let Some(entry) = catalogue.get(name) else {
                return Err(denied(
                    "unknown_feature",
                    format!("features: {name} is not a feature provided by the Autopilot server"),
                ));
            };
            let privacy_flags = entry.feature.privacy_flags;
            self.flags
                .check_feature(name, privacy_flags)
                .map_err(flag_refusal)?;
            union |= privacy_flags;
            if let Some(server_rule) = &entry.unknown_rule {
                return Err(denied(
                    "feature_needs_upgrade",
                    format!("features: {name} uses rule {server_rule}, which this litd does not know; upgrade litd"),
                ));
            }
            let requested = req.features.get(*name).and_then(|f| f.rules.as_ref());
            for (rule, value) in requested.iter().flat_map(|r| r.rules.iter()) {
                let Some(bounds) = entry.rules.get(rule) else {
                    return Err(denied(
                        "rule_not_listed",
                        format!("features.{name}.rules: autopilot did not specify {rule} as a rule for feature {name}"),
                    ));
                };
                let min = bound(name, rule, "min_value", &bounds.min_value)?;
                let max = bound(name, rule, "max_value", &bounds.max_value)?;
                if let Err(reason) = rules::check_sane(rule, value, min, max) {
                    return Err(denied(
                        "rule_out_of_bounds",
                        format!(
                            "features.{name}.rules.{rule}: rule value for {rule} not valid for feature {name}. \
                             Expected rule value between {} and {}. Got {}. {reason}",
                            show(rule, min),
                            show(rule, max),
                            show(rule, value)
                        ),
                    ));
                }
            }
            if let Some(bounds) = entry.rules.get(RATE_LIMIT) {
                let explicit = requested.and_then(|r| r.rules.get(RATE_LIMIT));
                let effective = match explicit {
                    Some(v) => {
                        self.check_caps(name, v)?;
                        None
                    }
                    None => {
                        let default = bound(name, RATE_LIMIT, "default", &bounds.default)?;
                        let min = bound(name, RATE_LIMIT, "min_value", &bounds.min_value)?;
                        let max = bound(name, RATE_LIMIT, "max_value", &bounds.max_value)?;
                        let capped = self.capped(default);
                        if let Err(reason) = rules::check_sane(RATE_LIMIT, &capped, min, max) {
                            return Err(denied(
                                "cap_below_server_min",
                                format!(
                                    "features.{name}.rules.rate-limit: the operator's cap {} is outside the server's \
                                     bounds for {name} ({reason}); raise [autopilot.rules] or request a value",
                                    show(RATE_LIMIT, &capped)
                                ),
                            ));
                        }
                        Some(capped)
                    }
                };
                if let Some(v) = effective {
                    rate_limits.insert((*name).clone(), v);
                }
            }
        }

        let privacy = !req.no_privacy_mapper;
        let approved_flags = if req.privacy_flags_set {
            self.flags
                .check_session(req.privacy_flags, union)
                .map_err(flag_refusal)?;
            req.privacy_flags
        } else {
            union
        };

        if let Some(l) = linked {
            let gid = hex::encode(&req.linked_group_id);
            if !l.first_in_group {
                return Err(denied(
                    "linked_not_first",
                    format!("linked_group_id: session {gid} is not the first in its session group"),
                ));
            }
            if l.privacy_flags != approved_flags {
                return Err(denied(
                    "linked_flags_differ",
                    format!(
                        "privacy_flags: a linked session must carry the flags of session {gid} ({}), not ({})",
                        privacy::flags::describe(l.privacy_flags),
                        privacy::flags::describe(approved_flags)
                    ),
                ));
            }
        }

        // What each config shows the Autopilot server once litd has obfuscated it, with the
        // flags litd will store: refused if it reveals what those flags keep private.
        let inspected_as = if privacy {
            Privacy::Mapper {
                flags: approved_flags,
            }
        } else {
            Privacy::NoMapper
        };
        for name in names.iter().filter(|n| self.privacy.inspects(n)) {
            let config = req.features.get(*name).map_or(&[][..], |f| &f.config[..]);
            feature_config::check_feature(name, config, inspected_as).map_err(config_refusal)?;
        }

        Ok(Decision {
            write_flags: privacy.then_some(approved_flags),
            approved_flags,
            rate_limits,
            features: names.into_iter().cloned().collect(),
            privacy,
        })
    }

    fn check_caps(&self, feature: &str, v: &RuleValue) -> Result<(), Refusal> {
        let Some(Value::RateLimit(rl)) = &v.value else {
            return Ok(());
        };
        for (class, rate, cap, key) in [
            (
                "read",
                rl.read_limit,
                self.caps.rate_limit_read_max,
                "rate_limit_read_max",
            ),
            (
                "write",
                rl.write_limit,
                self.caps.rate_limit_write_max,
                "rate_limit_write_max",
            ),
        ] {
            let rate = rate.unwrap_or_default();
            if per_hour(rate.iterations, rate.num_hours) > per_hour(cap.iterations, cap.num_hours) {
                return Err(denied(
                    "above_cap",
                    format!(
                        "features.{feature}.rules.rate-limit: {class} limit {} per {}h is above the operator's cap \
                         [autopilot.rules] {key} = {} per {}h",
                        rate.iterations, rate.num_hours, cap.iterations, cap.num_hours
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The server default with each class lowered to the operator's cap where it is above it.
    fn capped(&self, default: &RuleValue) -> RuleValue {
        let Some(Value::RateLimit(rl)) = &default.value else {
            return default.clone();
        };
        let cap = |r: Option<Rate>, c: CapRate| {
            let r = r.unwrap_or_default();
            if r.num_hours == 0
                || per_hour(r.iterations, r.num_hours) > per_hour(c.iterations, c.num_hours)
            {
                Rate {
                    iterations: c.iterations,
                    num_hours: c.num_hours,
                }
            } else {
                r
            }
        };
        RuleValue {
            value: Some(Value::RateLimit(RateLimit {
                read_limit: Some(cap(rl.read_limit, self.caps.rate_limit_read_max)),
                write_limit: Some(cap(rl.write_limit, self.caps.rate_limit_write_max)),
            })),
        }
    }
}

fn per_hour(iterations: u32, hours: u32) -> f64 {
    f64::from(iterations) / f64::from(hours)
}

/// litd's parse checks plus the holes litd leaves open: a rate-limit needs both limits and a
/// positive `num_hours` (0/0 would be NaN and pass litd's comparisons; n/0 is infinite).
fn check_rule_value(feature: &str, rule: &str, value: &RuleValue) -> Result<(), Refusal> {
    let field = format!("features.{feature}.rules.{rule}");
    if !rules::is_known(rule) {
        return Err(invalid(
            "unknown_rule",
            format!("{field}: unknown rule {rule}, please upgrade"),
        ));
    }
    if let Some(Value::RateLimit(rl)) = &value.value {
        for (class, r) in [
            ("read_limit", rl.read_limit),
            ("write_limit", rl.write_limit),
        ] {
            match r {
                None => {
                    return Err(invalid(
                        "bad_rate_limit",
                        format!("{field}: {class} is missing"),
                    ))
                }
                Some(r) if r.num_hours == 0 => {
                    return Err(invalid(
                        "bad_rate_limit",
                        format!("{field}: {class}.num_hours must be positive"),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    rules::check_value(rule, value).map_err(|e| {
        let reason = match e {
            RuleError::WrongType => "wrong_rule_type",
            _ => "bad_rule_value",
        };
        invalid(reason, format!("{field}: {e}"))
    })
}

/// A rule value of the catalogue, parsed when the catalogue was fetched; one the server sent
/// unreadable refuses the call that needs it.
fn bound<'a>(
    feature: &str,
    rule: &str,
    which: &str,
    parsed: &'a Result<RuleValue, RuleError>,
) -> Result<&'a RuleValue, Refusal> {
    parsed.as_ref().map_err(|e| {
        refuse(
            "bad_catalogue",
            Code::Unavailable,
            format!(
                "the Autopilot server's {which} for {rule} of feature {feature} is unreadable: {e}"
            ),
        )
    })
}

fn show(rule: &str, v: &RuleValue) -> String {
    rules::to_json(rule, v).unwrap_or_else(|_| "?".into())
}

/// How long and how many approvals are kept for the relay (litd registers within the same
/// call, seconds after the decision).
pub(crate) const APPROVAL_BOUNDS: crate::store::ApprovalBounds = crate::store::ApprovalBounds {
    max_age: Duration::from_secs(600),
    max_count: 10_000,
};

#[cfg(test)]
mod tests;
