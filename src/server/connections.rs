//! What a listener allows its connections: the timeouts and caps of `[listen]` ([`Limits`]),
//! and the open connections they are counted against ([`Connections`]: a global count and one
//! per peer, IPv4 address or IPv6 /64). Admission happens in the accept loop, before any TLS
//! work: a connection over a cap is refused at once (a TLS alert, then close) and counted by
//! reason. It never blocks and never holds a refused connection open.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::config::ListenConfig;
use crate::telemetry::metrics::registered;

/// The timeouts and caps a listener enforces (`[listen]`; see `config/litgate.toml`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) handshake_timeout: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) stalled_stream_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_peer: usize,
}

impl Limits {
    /// The limits `[listen]` sets.
    pub(crate) fn of(listen: &ListenConfig) -> Limits {
        Limits {
            handshake_timeout: listen.handshake_timeout,
            header_read_timeout: listen.header_read_timeout,
            idle_timeout: listen.idle_timeout,
            keepalive_interval: listen.keepalive_interval,
            keepalive_timeout: listen.keepalive_timeout,
            stalled_stream_timeout: listen.stalled_stream_timeout,
            max_header_bytes: listen.max_header_bytes,
            max_connections: listen.max_connections,
            max_connections_per_peer: listen.max_connections_per_peer,
        }
    }
}

/// Why a connection was refused or closed by litgate: the `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Reason {
    reason: &'static str,
}

/// The connection metrics of a listener (`litgate_connections_*` for the public face).
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnMetrics {
    open: Gauge,
    refused: Family<Reason, Counter>,
    closed: Family<Reason, Counter>,
    stalled: Counter,
}

impl ConnMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn register(registry: &mut Registry) -> ConnMetrics {
        ConnMetrics {
            open: registered(registry, "open", "Open connections"),
            refused: registered(
                registry,
                "refused",
                "Connections refused at accept, by the cap that was full",
            ),
            closed: registered(
                registry,
                "closed",
                "Connections litgate closed, by reason (handshake_timeout, handshake_failed, \
                 header_timeout, idle_timeout, keepalive_timeout, stalled)",
            ),
            stalled: registered(
                registry,
                "stalled_streams",
                "Responses reset because their reader took nothing for stalled_stream_timeout",
            ),
        }
    }

    /// Counts a connection litgate closed for `reason`.
    pub(crate) fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&Reason { reason }).inc();
    }

    /// Counts a response reset because its reader stalled.
    pub(crate) fn stalled(&self) -> Counter {
        self.stalled.clone()
    }
}

/// A listener's open connections, counted against its [`Limits`]. Cloned into every listener
/// that shares the caps.
#[derive(Clone, Debug)]
pub(crate) struct Connections {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    metrics: ConnMetrics,
    counts: Mutex<Counts>,
    /// Whether a cap is full, so refusals are logged once per episode, not once per refusal.
    refusing: AtomicBool,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// A refused connection: which cap was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `listen.max_connections`.
    Total,
    /// `listen.max_connections_per_peer`.
    Peer,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::Peer => "max_connections_per_peer",
        }
    }
}

impl Connections {
    /// Connections under `limits`, counted in `metrics`.
    pub(crate) fn new(limits: Limits, metrics: ConnMetrics) -> Connections {
        Connections {
            inner: Arc::new(Inner {
                limits,
                metrics,
                counts: Mutex::default(),
                refusing: AtomicBool::new(false),
            }),
        }
    }

    /// The limits connections are held to.
    pub(crate) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The metrics connections are counted in.
    pub(crate) fn metrics(&self) -> &ConnMetrics {
        &self.inner.metrics
    }

    /// Admits a connection from `peer`, or says which cap is full. The connection counts as
    /// open until the [`Permit`] is dropped.
    pub(crate) fn admit(&self, peer: SocketAddr) -> Result<Permit, Refused> {
        let key = peer_key(peer.ip());
        let limits = &self.inner.limits;
        let verdict = {
            let mut counts = self.lock();
            let from_peer = counts.per_peer.get(&key).copied().unwrap_or(0);
            if counts.total >= limits.max_connections {
                Err(Refused::Total)
            } else if from_peer >= limits.max_connections_per_peer {
                Err(Refused::Peer)
            } else {
                counts.total += 1;
                *counts.per_peer.entry(key).or_insert(0) += 1;
                Ok(())
            }
        };
        match verdict {
            Ok(()) => {
                self.inner.metrics.open.inc();
                if self.inner.refusing.swap(false, Ordering::Relaxed) {
                    tracing::info!("accepting connections again");
                }
                Ok(Permit {
                    conns: self.clone(),
                    key,
                })
            }
            Err(refused) => {
                let reason = refused.label();
                self.inner
                    .metrics
                    .refused
                    .get_or_create(&Reason { reason })
                    .inc();
                if !self.inner.refusing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        cap = reason,
                        "refusing connections: listen.{reason} reached"
                    );
                }
                Err(refused)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent under a panic (each update is one statement).
        self.inner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One admitted connection; dropping it closes its place in the counts. It lives in the
/// connection's I/O, so an upgraded connection (a WebSocket) keeps counting until it closes.
#[derive(Debug)]
pub(crate) struct Permit {
    conns: Connections,
    key: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.conns.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_peer.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.per_peer.remove(&self.key);
            }
        }
        drop(counts);
        self.conns.inner.metrics.open.dec();
    }
}

/// The peer a connection is counted against: its IPv4 address, or its IPv6 /64 (one host's
/// usual allocation: a single IPv6 client has a whole /64 to connect from).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

/// A fatal TLS `internal_error` alert in a plaintext record (legal before any handshake
/// message): what a TLS client reports when refused over a cap, rather than a bare reset.
const TLS_ALERT_INTERNAL_ERROR: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50];

/// Refuses an accepted connection at once, without waiting on it: with `tls`, writes a TLS
/// alert first; then reads what the client has already sent (so that closing sends FIN rather
/// than a reset that could discard the alert) and closes. The socket is taken out of tokio so
/// that both are plain non-blocking calls, made now (a fresh tokio socket has no readiness
/// yet, and its `try_*` calls would not even try).
pub(crate) fn refuse(tcp: tokio::net::TcpStream, tls: bool) {
    use std::io::{Read, Write};
    let Ok(mut sock) = tcp.into_std() else {
        return;
    };
    if tls {
        let _ = sock.write(&TLS_ALERT_INTERNAL_ERROR);
    }
    let mut sink = [0u8; 2048];
    for _ in 0..4 {
        match sock.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_peer: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_peer: per_peer,
            ..Limits::of(&ListenConfig::default())
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_caps_refuse_over_them_and_admit_again_after_a_close() {
        let conns = Connections::new(limits(3, 2), ConnMetrics::default());
        let a1 = conns.admit(addr("192.0.2.1:1000")).unwrap();
        let _a2 = conns.admit(addr("192.0.2.1:1001")).unwrap();
        assert_eq!(
            conns.admit(addr("192.0.2.1:1002")).unwrap_err(),
            Refused::Peer
        );
        let _b1 = conns.admit(addr("192.0.2.2:1000")).unwrap();
        assert_eq!(
            conns.admit(addr("192.0.2.3:1000")).unwrap_err(),
            Refused::Total
        );
        drop(a1);
        let _a3 = conns.admit(addr("192.0.2.1:1003")).unwrap();
        assert_eq!(conns.lock().total, 3);
    }

    #[test]
    fn ipv6_peers_count_per_64_and_mapped_ipv4_as_ipv4() {
        let conns = Connections::new(limits(10, 1), ConnMetrics::default());
        let _a = conns.admit(addr("[2001:db8:1:2::1]:1")).unwrap();
        assert_eq!(
            conns.admit(addr("[2001:db8:1:2:ffff::9]:1")).unwrap_err(),
            Refused::Peer,
            "same /64"
        );
        let _b = conns.admit(addr("[2001:db8:1:3::1]:1")).unwrap();
        let _c = conns.admit(addr("192.0.2.9:1")).unwrap();
        assert_eq!(
            conns.admit(addr("[::ffff:192.0.2.9]:1")).unwrap_err(),
            Refused::Peer,
            "an IPv4-mapped address is that IPv4 peer"
        );
    }

    #[test]
    fn counts_are_released_with_the_permits() {
        let conns = Connections::new(limits(10, 10), ConnMetrics::default());
        let permits: Vec<_> = (0..5)
            .map(|i| conns.admit(addr(&format!("192.0.2.{i}:1"))).unwrap())
            .collect();
        assert_eq!(conns.inner.metrics.open.get(), 5);
        drop(permits);
        assert_eq!(conns.lock().total, 0);
        assert!(conns.lock().per_peer.is_empty());
        assert_eq!(conns.inner.metrics.open.get(), 0);
    }
}
