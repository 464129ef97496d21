//! `[rate_limit]`: the limits per method class and per method, and how callers are grouped.
//! Serde and validation only; the limiter reads the values.

use std::{collections::HashMap, time::Duration};

use serde::Deserialize;

use crate::{
    methods::{is_grpc_shaped, is_known, known_in_service},
    values::{rate, Rate, Report},
};

/// `[rate_limit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Whether the layer is on.
    pub enabled: bool,
    /// Limit for read methods, per caller. `iterations = 0` blocks every read.
    pub read: Rate,
    /// Limit for write methods (and unknown methods), per caller. `iterations = 0` blocks them.
    pub write: Rate,
    /// Per-method overrides (`[[rate_limit.method]]`); they replace the class limit for that
    /// method (gRPC, grpc-web and its REST twin alike) and have buckets of their own.
    pub method: Vec<MethodLimit>,
    /// Prefix length that groups IPv4 peers into one bucket (0..=32).
    pub peer_prefix_v4: u8,
    /// Prefix length that groups IPv6 peers into one bucket (0..=128).
    pub peer_prefix_v6: u8,
    /// Most macaroon identifiers remembered as accepted; the oldest is forgotten first (its
    /// caller falls back to its address bucket until litd accepts it again).
    pub max_identities: usize,
    /// How often limiter keys whose bucket has refilled are dropped.
    #[serde(with = "crate::values::duration")]
    pub sweep_every: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            read: Rate {
                iterations: 36000,
                num_hours: 1,
            },
            write: Rate {
                iterations: 3600,
                num_hours: 1,
            },
            method: Vec::new(),
            peer_prefix_v4: 32,
            peer_prefix_v6: 64,
            max_identities: 10_000,
            sweep_every: Duration::from_secs(60),
        }
    }
}

/// `[[rate_limit.method]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodLimit {
    /// Full gRPC method path, e.g. `/litrpc.Autopilot/AddAutopilotSession`.
    pub path: String,
    /// The limit for that method; `iterations = 0` blocks it.
    pub limit: Rate,
    /// `true` to limit a path litgate's method table does not know (a newer litd's method);
    /// without it such a path is refused as a likely typo, since it would never apply.
    #[serde(default)]
    pub unknown: bool,
}

impl RateLimitConfig {
    /// Checks values serde cannot, naming each key at fault.
    pub(crate) fn validate(&self, err: &mut Report<'_>) {
        rate(err, "rate_limit.read", self.read);
        rate(err, "rate_limit.write", self.write);
        let mut seen = HashMap::new();
        for (i, m) in self.method.iter().enumerate() {
            let key = format!("rate_limit.method[{i}]");
            if !is_grpc_shaped(&m.path) {
                err(
                    &format!("{key}.path"),
                    format!(
                        "{:?} is not a gRPC method path like /pkg.Service/Method",
                        m.path
                    ),
                );
            } else if !m.unknown && !is_known(&m.path) {
                let known = known_in_service(&m.path);
                let hint = if known.is_empty() {
                    "no method of that service is known".to_string()
                } else {
                    format!("known in that service: {}", known.join(", "))
                };
                err(
                    &format!("{key}.path"),
                    format!(
                        "{:?} is not a method litgate knows ({hint}); if the path is right, set \
                         unknown = true on this entry",
                        m.path
                    ),
                );
            } else if let Some(first) = seen.insert(m.path.as_str(), i) {
                err(
                    &format!("{key}.path"),
                    format!(
                        "{:?} is already limited by rate_limit.method[{first}]",
                        m.path
                    ),
                );
            }
            rate(err, &format!("{key}.limit"), m.limit);
        }
        if self.peer_prefix_v4 > 32 {
            err(
                "rate_limit.peer_prefix_v4",
                format!("{} is longer than 32 bits", self.peer_prefix_v4),
            );
        }
        if self.peer_prefix_v6 > 128 {
            err(
                "rate_limit.peer_prefix_v6",
                format!("{} is longer than 128 bits", self.peer_prefix_v6),
            );
        }
        if self.sweep_every.is_zero() {
            err("rate_limit.sweep_every", "must be greater than zero".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_keys() {
        let mut c = RateLimitConfig {
            read: Rate {
                iterations: 0,
                num_hours: 0,
            },
            ..RateLimitConfig::default()
        };
        c.method.push(MethodLimit {
            path: "/v1/sessions".into(),
            limit: Rate {
                iterations: 1,
                num_hours: 1,
            },
            unknown: false,
        });
        for _ in 0..2 {
            c.method.push(MethodLimit {
                path: crate::methods::ADD_AUTOPILOT_SESSION.into(),
                limit: Rate {
                    iterations: 0,
                    num_hours: 0,
                },
                unknown: false,
            });
        }
        // A typo is refused, naming the service's methods; `unknown = true` lets a path the
        // table does not know through.
        for unknown in [false, true] {
            c.method.push(MethodLimit {
                path: "/litrpc.Autopilot/AddAutopilotSesion".into(),
                limit: Rate {
                    iterations: 1,
                    num_hours: 1,
                },
                unknown,
            });
        }
        c.peer_prefix_v6 = 129;
        c.sweep_every = Duration::ZERO;
        let mut keys = Vec::new();
        let mut reasons = Vec::new();
        c.validate(&mut |k: &str, r: String| {
            keys.push(k.to_string());
            reasons.push(r);
        });
        assert_eq!(
            keys,
            [
                "rate_limit.read.num_hours",
                "rate_limit.method[0].path",
                "rate_limit.method[1].limit.num_hours",
                "rate_limit.method[2].path",
                "rate_limit.method[2].limit.num_hours",
                "rate_limit.method[3].path",
                "rate_limit.peer_prefix_v6",
                "rate_limit.sweep_every",
            ]
        );
        let typo = &reasons[5];
        assert!(
            typo.contains("\"/litrpc.Autopilot/AddAutopilotSesion\" is not a method litgate knows")
                && typo.contains("AddAutopilotSession, ")
                && typo.contains("unknown = true"),
            "{typo}"
        );
    }
}
