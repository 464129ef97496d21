//! `[autopilot]`, `[autopilot.relay]` and `[autopilot.rules]`: the Autopilot server, the relay
//! face litd registers through, and the operator's caps on rule values. Serde and validation
//! only; the client, the relay and the policy read the values.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::values::{host_port, nonzero, rate, Rate, Report};

/// `[autopilot]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutopilotConfig {
    /// The Autopilot server, `host:port`.
    pub server: String,
    /// PEM cert to pin for a self-signed server; empty: system roots.
    pub tls_cert: PathBuf,
    /// Plaintext gRPC to the server (tests, loopback only).
    pub plaintext: bool,
    /// Per-call timeout towards the server.
    #[serde(with = "crate::values::duration")]
    pub timeout: Duration,
    /// How long a fetched feature catalogue is fresh.
    #[serde(with = "crate::values::duration")]
    pub catalogue_ttl: Duration,
    /// How long a stale catalogue may be used while the server is unreachable.
    #[serde(with = "crate::values::duration")]
    pub catalogue_max_stale: Duration,
    /// `[autopilot.relay]`.
    pub relay: RelayConfig,
    /// `[autopilot.rules]`.
    pub rules: RulesConfig,
}

impl Default for AutopilotConfig {
    fn default() -> Self {
        Self {
            server: "autopilot.lightning.finance:12010".into(),
            tls_cert: Default::default(),
            plaintext: false,
            timeout: Duration::from_secs(10),
            catalogue_ttl: Duration::from_secs(600),
            catalogue_max_stale: Duration::from_secs(24 * 3600),
            relay: RelayConfig::default(),
            rules: RulesConfig::default(),
        }
    }
}

/// `[autopilot.relay]`: litd's `autopilot.address` points here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Listen address; `None` (an empty string in the file) turns the relay off.
    #[serde(with = "crate::values::optional_addr")]
    pub addr: Option<SocketAddr>,
    /// How often the ledger is reconciled with litd's sessions.
    #[serde(with = "crate::values::duration")]
    pub reconcile_every: Duration,
    /// Registrations younger than this are not reconciled (their AddAutopilotSession may still
    /// be running in litd).
    #[serde(with = "crate::values::duration")]
    pub reconcile_grace: Duration,
    /// Serve the relay over TLS with the public face's certificate (litd's
    /// `--autopilot.tlspath`); false: plaintext (litd's `--autopilot.insecure`, loopback only).
    pub tls: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            addr: Some(SocketAddr::from(([127, 0, 0, 1], 12010))),
            reconcile_every: Duration::from_secs(600),
            reconcile_grace: Duration::from_secs(300),
            tls: false,
        }
    }
}

/// `[autopilot.rules]`: operator caps on AddAutopilotSession rule values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Highest read rate a session may be granted.
    pub rate_limit_read_max: Rate,
    /// Highest write rate a session may be granted.
    pub rate_limit_write_max: Rate,
    /// Longest session lifetime from now.
    #[serde(with = "crate::values::duration")]
    pub max_expiry: Duration,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            rate_limit_read_max: Rate {
                iterations: 1000,
                num_hours: 1,
            },
            rate_limit_write_max: Rate {
                iterations: 10,
                num_hours: 1,
            },
            max_expiry: Duration::from_secs(2160 * 3600),
        }
    }
}

impl AutopilotConfig {
    pub(crate) fn validate(&self, err: &mut Report<'_>) {
        if host_port(&self.server).is_none() {
            err(
                "autopilot.server",
                format!("{:?} is not host:port", self.server),
            );
        }
        if self.plaintext && !self.tls_cert.as_os_str().is_empty() {
            err(
                "autopilot.tls_cert",
                "set together with autopilot.plaintext = true".into(),
            );
        }
        nonzero(err, "autopilot.timeout", self.timeout);
        nonzero(err, "autopilot.catalogue_ttl", self.catalogue_ttl);
        if self.catalogue_max_stale < self.catalogue_ttl {
            err(
                "autopilot.catalogue_max_stale",
                "must be at least autopilot.catalogue_ttl".into(),
            );
        }
        nonzero(
            err,
            "autopilot.relay.reconcile_every",
            self.relay.reconcile_every,
        );
        let rules = &self.rules;
        rate(
            err,
            "autopilot.rules.rate_limit_read_max",
            rules.rate_limit_read_max,
        );
        rate(
            err,
            "autopilot.rules.rate_limit_write_max",
            rules.rate_limit_write_max,
        );
        nonzero(err, "autopilot.rules.max_expiry", rules.max_expiry);
    }
}
