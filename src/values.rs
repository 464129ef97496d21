//! Configuration value types every section shares: LiT's RateLimit shape ([`Rate`]), durations
//! written as `"10s"` ([`duration`]), optional listen addresses where an empty string means off
//! ([`optional_addr`]), `host:port` ([`host_port`]) and the checks that recur across sections.
//! A leaf: it imports nothing from litgate, so every section's config module can use it
//! without pulling in a runtime module.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

/// LiT's RateLimit shape: at most `iterations` calls per `num_hours` hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Calls allowed per window. 0 means blocked, where a section says so.
    pub iterations: u32,
    /// Window length in hours; must be positive.
    pub num_hours: u32,
}

/// How a section reports a problem: the dotted key and what is wrong with it.
pub(crate) type Report<'a> = dyn FnMut(&str, String) + 'a;

/// Reports `key` unless `d` is positive.
pub(crate) fn nonzero(err: &mut Report<'_>, key: &str, d: Duration) {
    if d.is_zero() {
        err(key, "must be greater than zero".into());
    }
}

/// Reports `key.num_hours` unless it is positive (`iterations = 0` means blocked, which every
/// section that takes a [`Rate`] allows).
pub(crate) fn rate(err: &mut Report<'_>, key: &str, r: Rate) {
    if r.num_hours == 0 {
        err(&format!("{key}.num_hours"), "must be positive".into());
    }
}

/// `host:port` with a numeric port; returns the parts.
pub(crate) fn host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// Serde helper for durations written as `"250ms"`, `"10s"`, `"24h"`.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Deserializes a duration string.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write a number and a unit, like \"250ms\", \"10s\", \"24h\""
            ))
        })
    }
}

/// Serde helper for a listen address: `"ip:port"`.
pub(crate) mod addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer};

    /// Deserializes an `ip:port` string, echoing a bad one.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "{s:?}: need ip:port, like \"0.0.0.0:8445\" or \"[::]:8445\""
            ))
        })
    }
}

/// Serde helper for a listen address that may be off: `"ip:port"`, or `""` for off.
pub(crate) mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer};

    /// Deserializes an `ip:port` string; the empty string is `None`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_optional_addr(&s).map_err(serde::de::Error::custom)
    }
}

fn parse_optional_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{s:?} is not an ip:port socket address (empty turns it off)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_needs_a_host_and_a_numeric_port() {
        assert_eq!(host_port("litd:8443"), Some(("litd", 8443)));
        assert_eq!(host_port("[::1]:10009"), Some(("::1", 10009)));
        for bad in ["no-port", ":8443", "litd:http"] {
            assert_eq!(host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn optional_addresses() {
        assert_eq!(parse_optional_addr(""), Ok(None));
        assert_eq!(
            parse_optional_addr("127.0.0.1:12010"),
            Ok(Some(SocketAddr::from(([127, 0, 0, 1], 12010))))
        );
        let e = parse_optional_addr("localhost:12010").unwrap_err();
        assert!(e.contains("is not an ip:port socket address"), "{e}");
    }
}
