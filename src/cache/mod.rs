//! The session cache (`design.md` §6): answers `ListSessions` and `ListAutopilotSessions`, in
//! gRPC, grpc-web, grpc-web-text and REST, from sled when litd already gave the same caller the
//! same answer, and invalidates everything on every session write that goes through litgate.
//! Owns `[cache]`. Sits in the router, after identity and the rate limiter: the router hands it
//! the two list routes, and wraps the four write routes (AddSession, RevokeSession,
//! AddAutopilotSession, RevokeAutopilotSession) with [`Cache::after_write`].
//!
//! Those answers carry every session's pairing secret, so this is a security boundary first:
//!
//! - **Key**: an HKDF-SHA256 id of the caller's *full* credential (so an attenuated copy, which
//!   shares the macaroon identifier, is another caller here) ‖ route ‖ protocol ‖ a digest of the
//!   request headers that shape the answer's bytes (content type, accept, accept encodings). No
//!   credential, or a request that is not the canonical empty list request, bypasses the cache.
//!   Only answers litd gave with OK (grpc-status 0, HTTP 200) are stored, so a hit goes only to
//!   a credential litd accepted for exactly that entry.
//! - **Value**: the answer as bytes (status, every end-to-end header, body, trailers),
//!   sealed with ChaCha20-Poly1305 under a key derived from the credential ([`crypto`]), with a
//!   random nonce and the key plus the clear header as associated data. The sled file alone gives
//!   neither the way to find an entry nor to read it; an entry that does not open is a miss
//!   (counted), never an error. A hit decrypts and replays bytes: no protobuf work.
//! - **Freshness**: `ttl`, the earliest expiry of any created/in-use session in the answer
//!   (decoded once, when stored), and the credential's `time-before` caveat. A session write
//!   through litgate bumps a generation persisted (and flushed) in the store: every entry of an
//!   older generation is invalid, including one a concurrent miss was about to write.
//! - **Single flight**: concurrent misses for one key share one upstream call, made by a spawned
//!   task so that a caller hanging up does not cancel it for the others.
//! - **Stale**: when litd cannot be reached, an entry up to `max_stale` past its freshness (never
//!   past the credential's `time-before`) is served with `litgate-cache: stale`. A non-OK answer
//!   from litd to a list call drops every entry of that credential, so nothing stale is served
//!   to a credential litd has refused.
//!
//! It must never log, count or return a credential, a derived key or a cached body.

pub(crate) mod config;
pub mod crypto;

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use self::{
    config::CacheConfig,
    crypto::{CredentialKeys, ID_LEN},
};
use crate::{
    body::{self, Request, Response},
    clock::SharedClock,
    error::Error,
    grpc::{
        codec::{self, Unary},
        status::{status_of, Answer},
        Protocol,
    },
    layers::identity::Caller,
    methods::Route,
    store::{Store, StoreError},
};

/// Response header (gRPC: initial metadata) marking an answer served stale while litd was down.
pub const STALE_HEADER: &str = "litgate-cache";
/// The value of [`STALE_HEADER`].
pub const STALE_VALUE: &str = "stale";

/// A list request is a few bytes; anything near this is not one worth caching or reading.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Entry layout version (first byte of every stored value).
const ENTRY_VERSION: u8 = 1;
/// version (1) ‖ generation (8) ‖ fresh_until ms (8) ‖ hard_until ms (8).
const HEADER_LEN: usize = 25;
/// Answer headers not replayed: recomputed by the server for every answer. Everything else
/// litd sent (gRPC initial metadata, grpc-gateway's `Grpc-Metadata-*`, CORS headers, whose
/// `Origin` is part of the key) is part of the answer and replayed with it; hop-by-hop headers
/// never get this far (the upstream client drops them).
const RECOMPUTED_HEADERS: [HeaderName; 2] = [header::DATE, header::CONTENT_LENGTH];

/// The cache's Prometheus metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Answers served fresh from the cache.
    pub hits: Counter,
    /// Cacheable calls that went to litd (or waited for a call that did).
    pub misses: Counter,
    /// Answers served stale because litd was unreachable.
    pub stale: Counter,
    /// Calls that could not use the cache (no credential, not the canonical request).
    pub bypasses: Counter,
    /// Entries that did not authenticate (tampered, truncated, foreign): each was a miss.
    pub undecryptable: Counter,
    /// Entries in the store.
    pub entries: Gauge,
    /// Bytes of those entries (keys and sealed values).
    pub bytes: Gauge,
}

impl Metrics {
    /// Registers every cache metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "litgate_cache_hits",
            "Session lists served fresh from the cache",
            m.hits.clone(),
        );
        registry.register(
            "litgate_cache_misses",
            "Cacheable session lists that went to litd",
            m.misses.clone(),
        );
        registry.register(
            "litgate_cache_stale",
            "Session lists served stale (marked) while litd was unreachable",
            m.stale.clone(),
        );
        registry.register(
            "litgate_cache_bypasses",
            "Session lists that could not use the cache (no credential, non-canonical request)",
            m.bypasses.clone(),
        );
        registry.register(
            "litgate_cache_undecryptable",
            "Cache entries that failed authentication and were treated as misses",
            m.undecryptable.clone(),
        );
        registry.register(
            "litgate_cache_entries",
            "Entries in the session cache",
            m.entries.clone(),
        );
        registry.register(
            "litgate_cache_bytes",
            "Bytes of the session cache's entries (keys and sealed values)",
            m.bytes.clone(),
        );
        m
    }
}

type Forward = Arc<
    dyn Fn(Request) -> Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>> + Send + Sync,
>;

/// The session cache. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    clock: SharedClock,
    forward: Forward,
    upstream_label: String,
    ttl: Duration,
    max_stale: Duration,
    max_entries: usize,
    max_entry_bytes: usize,
    salt: [u8; 32],
    generation: AtomicU64,
    inflight: Mutex<HashMap<Vec<u8>, Waiter>>,
    metrics: Metrics,
}

/// Where the callers sharing one in-flight upstream call wait for its outcome.
type Waiter = watch::Receiver<Option<Arc<Outcome>>>;

/// What one upstream call for a key ended in, shared by every caller waiting on it.
enum Outcome {
    /// litd answered (OK or not).
    Answer(Arc<Answer>),
    /// litd could not be reached, or the answer broke off.
    Unreachable(String),
}

/// What a lookup found.
enum Lookup {
    Fresh(Answer),
    Stale(Answer),
    Absent,
}

/// How litd answered, as far as the bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    NotOk,
    Unknown,
}

impl Cache {
    /// Builds the cache over `store`, forwarding misses to `upstream` (litd; `label` names it
    /// in errors), and registers its metrics.
    pub fn new<S>(
        cfg: &CacheConfig,
        store: Store,
        clock: SharedClock,
        upstream: S,
        label: impl Into<String>,
        registry: &mut Registry,
    ) -> Result<Cache, StoreError>
    where
        S: tower::Service<Request, Response = Response, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let metrics = Metrics::register(registry);
        Self::with_metrics(cfg, store, clock, upstream, label, metrics)
    }

    /// Same as [`new`](Self::new), with metrics the caller registered (or not).
    pub fn with_metrics<S>(
        cfg: &CacheConfig,
        store: Store,
        clock: SharedClock,
        upstream: S,
        label: impl Into<String>,
        metrics: Metrics,
    ) -> Result<Cache, StoreError>
    where
        S: tower::Service<Request, Response = Response, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let salt = store.cache_salt()?;
        let generation = store.cache_generation()?;
        let (entries, bytes) = store.cache_usage()?;
        metrics.entries.set(entries as i64);
        metrics.bytes.set(bytes as i64);
        let forward: Forward = Arc::new(move |req| {
            let mut svc = upstream.clone();
            Box::pin(async move {
                std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                svc.call(req).await
            })
        });
        Ok(Cache {
            inner: Arc::new(Inner {
                store,
                clock,
                forward,
                upstream_label: label.into(),
                ttl: cfg.ttl,
                max_stale: cfg.max_stale,
                max_entries: cfg.max_entries,
                max_entry_bytes: cfg.max_entry_bytes,
                salt,
                generation: AtomicU64::new(generation),
                inflight: Mutex::new(HashMap::new()),
                metrics,
            }),
        })
    }

    /// The metrics (tests and benches read them).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Answers a `ListSessions` or `ListAutopilotSessions` call (`route`), in any protocol: from
    /// the cache when it may, else from litd (one call per key at a time), else stale.
    pub async fn list(&self, route: Route, req: Request) -> Result<Response, Error> {
        let inner = &self.inner;
        let protocol = Protocol::of(&req);
        let caller = match req.extensions().get::<Caller>() {
            Some(c) => c.clone(),
            None => Caller::from_parts(req.headers(), None),
        };
        let (Some(route_tag), Some(protocol_tag), Some(credential)) =
            (route_tag(route), protocol_tag(protocol), caller.credential)
        else {
            inner.metrics.bypasses.inc();
            return (inner.forward)(req).await;
        };
        if !shape_ok(protocol, req.method(), req.uri()) {
            inner.metrics.bypasses.inc();
            return (inner.forward)(req).await;
        }
        let (parts, body) = req.into_parts();
        let raw = codec::read_body(body, MAX_REQUEST_BYTES).await?;
        let req = Request::from_parts(parts, body::full(raw.clone()));
        if !is_empty_list_request(protocol, &raw) {
            inner.metrics.bypasses.inc();
            return (inner.forward)(req).await;
        }

        let keys = CredentialKeys::derive(&inner.salt, &credential.raw);
        let key = cache_key(keys.id(), route_tag, protocol_tag, req.headers());
        if let Lookup::Fresh(c) = inner.lookup(&key, &keys) {
            inner.metrics.hits.inc();
            return Ok(replay(c, false));
        }
        inner.metrics.misses.inc();
        let hard_until = credential.time_before().map(ms).unwrap_or(u64::MAX);
        let outcome = self
            .fetch_shared(key.clone(), keys, protocol, hard_until, req)
            .await;
        match &*outcome {
            Outcome::Answer(c) => Ok(replay(Answer::clone(c), false)),
            Outcome::Unreachable(reason) => {
                // Looked up again: a refusal seen meanwhile has dropped the entry.
                let keys = CredentialKeys::derive(&inner.salt, &credential.raw);
                match inner.lookup(&key, &keys) {
                    Lookup::Fresh(c) => {
                        inner.metrics.hits.inc();
                        Ok(replay(c, false))
                    }
                    Lookup::Stale(c) => {
                        inner.metrics.stale.inc();
                        tracing::warn!(
                            route = route.label(),
                            "litd unreachable: serving a stale session list"
                        );
                        Ok(replay(c, true))
                    }
                    Lookup::Absent => Err(Error::Upstream {
                        addr: inner.upstream_label.clone(),
                        reason: reason.clone(),
                    }),
                }
            }
        }
    }

    /// Completes a session write (`result` is litd's answer to AddSession, RevokeSession,
    /// AddAutopilotSession or RevokeAutopilotSession, or the policy's refusal) and invalidates
    /// every entry before the caller sees the answer, unless litd clearly refused the write.
    /// The answer is read to the end for that (write answers are small) and replayed unchanged.
    pub async fn after_write(
        &self,
        protocol: Protocol,
        result: Result<Response, Error>,
    ) -> Result<Response, Error> {
        let resp = result?;
        let version = resp.version();
        let (parts, body) = resp.into_parts();
        let extensions = parts.extensions.clone();
        let captured = match Answer::read(Response::from_parts(parts, body)).await {
            Ok(a) => a,
            Err(e) => {
                // The write may have happened: invalidate, as for a success.
                self.invalidate().await;
                return Err(Error::Upstream {
                    addr: self.inner.upstream_label.clone(),
                    reason: e.to_string(),
                });
            }
        };
        if verdict(protocol, &captured) != Verdict::NotOk {
            self.invalidate().await;
        }
        let mut resp = replay(captured, false);
        *resp.version_mut() = version;
        resp.extensions_mut().extend(extensions);
        Ok(resp)
    }

    /// Invalidates every entry. The generation moves on in memory first, so from the moment
    /// this returns no entry written before it is served; persisting the bump and dropping the
    /// old entries happen off the answer path (a crash before sled's next flush, at most
    /// half a second later, can bring an old entry back for at most its TTL).
    pub async fn invalidate(&self) {
        let current = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            match inner.store.bump_cache_generation() {
                Ok(g) => {
                    inner.generation.fetch_max(g, Ordering::SeqCst);
                }
                Err(ref e) => {
                    tracing::warn!(error = %e, "session cache: could not persist the generation bump");
                }
            }
            // Only entries older than this invalidation: answers stored since are current.
            let dropped = inner.store.cache_retain(|_, v| {
                EntryHeader::parse(v).is_some_and(|h| h.generation >= current)
            });
            if let Err(e) = dropped {
                tracing::warn!(error = %e, "session cache: could not drop old entries");
            }
            inner.refresh_gauges();
        });
    }

    async fn fetch_shared(
        &self,
        key: Vec<u8>,
        keys: CredentialKeys,
        protocol: Protocol,
        hard_until: u64,
        req: Request,
    ) -> Arc<Outcome> {
        let mut rx = {
            let mut map = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match map.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key.clone(), rx.clone());
                    let inner = self.inner.clone();
                    tokio::spawn(async move {
                        // An answer stored just before this task became the leader.
                        let outcome = match inner.lookup(&key, &keys) {
                            Lookup::Fresh(c) => Outcome::Answer(Arc::new(c)),
                            _ => {
                                inner
                                    .fetch_and_store(&key, &keys, protocol, hard_until, req)
                                    .await
                            }
                        };
                        // Stored before the key leaves the map: a later miss finds the entry.
                        inner
                            .inflight
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&key);
                        let _ = tx.send(Some(Arc::new(outcome)));
                    });
                    rx
                }
            }
        };
        let shared = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone());
        shared.unwrap_or_else(|| {
            Arc::new(Outcome::Unreachable(
                "the upstream call for this list failed".into(),
            ))
        })
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        ms(self.clock.now())
    }

    fn refresh_gauges(&self) {
        match self.store.cache_usage() {
            Ok((n, b)) => {
                self.metrics.entries.set(n as i64);
                self.metrics.bytes.set(b as i64);
            }
            Err(e) => tracing::warn!(error = %e, "session cache: could not measure the store"),
        }
    }

    fn remove(&self, key: &[u8]) {
        match self.store.cache_remove(key) {
            Ok(Some(size)) => {
                self.metrics.entries.dec();
                self.metrics.bytes.dec_by(size as i64);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "session cache: could not remove an entry"),
        }
    }

    fn lookup(&self, key: &[u8], keys: &CredentialKeys) -> Lookup {
        let value = match self.store.cache_get(key) {
            Ok(Some(v)) => v,
            Ok(None) => return Lookup::Absent,
            Err(e) => {
                tracing::warn!(error = %e, "session cache: read failed; treating as a miss");
                return Lookup::Absent;
            }
        };
        let Some(h) = EntryHeader::parse(&value) else {
            self.metrics.undecryptable.inc();
            self.remove(key);
            return Lookup::Absent;
        };
        if h.generation != self.generation.load(Ordering::SeqCst) {
            self.remove(key);
            return Lookup::Absent;
        }
        let mut aad = Vec::with_capacity(key.len() + HEADER_LEN);
        aad.extend_from_slice(key);
        aad.extend_from_slice(&value[..HEADER_LEN]);
        let Some(captured) = keys
            .open(&aad, &value[HEADER_LEN..])
            .ok()
            .and_then(|p| decode_captured(Bytes::from(p)))
        else {
            self.metrics.undecryptable.inc();
            self.remove(key);
            return Lookup::Absent;
        };
        let now = self.now_ms();
        if now < h.fresh_until {
            Lookup::Fresh(captured)
        } else if now < h.stale_until(self.max_stale) {
            Lookup::Stale(captured)
        } else {
            self.remove(key);
            Lookup::Absent
        }
    }

    async fn fetch_and_store(
        &self,
        key: &[u8],
        keys: &CredentialKeys,
        protocol: Protocol,
        hard_until: u64,
        req: Request,
    ) -> Outcome {
        let generation = self.generation.load(Ordering::SeqCst);
        let resp = match (self.forward)(req).await {
            Ok(r) => r,
            Err(Error::Upstream { reason, .. }) => return Outcome::Unreachable(reason),
            Err(e) => return Outcome::Unreachable(e.to_string()),
        };
        let mut captured = match Answer::read(resp).await {
            Ok(a) => a,
            Err(e) => return Outcome::Unreachable(format!("the answer broke off: {e}")),
        };
        for h in &RECOMPUTED_HEADERS {
            captured.headers.remove(h);
        }
        match verdict(protocol, &captured) {
            Verdict::Ok => {
                self.store_answer(key, keys, protocol, hard_until, generation, &captured);
            }
            Verdict::NotOk => {
                // litd refused this credential (a list call has no arguments to refuse): no
                // entry of it may be served, not even stale.
                let dropped = self.store.cache_remove_prefix(&key[..ID_LEN]);
                match dropped {
                    Ok((n, b)) => {
                        self.metrics.entries.dec_by(n as i64);
                        self.metrics.bytes.dec_by(b as i64);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "session cache: could not drop a refused credential's entries")
                    }
                }
            }
            Verdict::Unknown => {}
        }
        Outcome::Answer(Arc::new(captured))
    }

    fn store_answer(
        &self,
        key: &[u8],
        keys: &CredentialKeys,
        protocol: Protocol,
        hard_until: u64,
        generation: u64,
        captured: &Answer,
    ) {
        if captured.body.len() > self.max_entry_bytes {
            return;
        }
        let now = self.now_ms();
        let Some(earliest_expiry) = earliest_active_expiry(protocol, &captured.body) else {
            tracing::debug!("session cache: answer not decodable for freshness; not stored");
            return;
        };
        let fresh_until = (now.saturating_add(self.ttl.as_millis() as u64))
            .min(
                earliest_expiry
                    .map(|s| s.saturating_mul(1000))
                    .unwrap_or(u64::MAX),
            )
            .min(hard_until);
        if fresh_until <= now {
            return;
        }
        if self.generation.load(Ordering::SeqCst) != generation {
            // A session write completed while litd was answering: the answer may predate it.
            return;
        }
        if self.metrics.entries.get() as usize >= self.max_entries && !self.make_room(now) {
            tracing::debug!("session cache: full; answer served but not stored");
            return;
        }
        let header = EntryHeader {
            generation,
            fresh_until,
            hard_until,
        }
        .encode();
        let mut aad = Vec::with_capacity(key.len() + HEADER_LEN);
        aad.extend_from_slice(key);
        aad.extend_from_slice(&header);
        let mut value = header.to_vec();
        value.extend_from_slice(&keys.seal(&aad, &encode_captured(now, captured)));
        match self.store.cache_put(key, &value) {
            Ok(old) => {
                let new = (key.len() + value.len()) as i64;
                match old {
                    Some(old) => {
                        self.metrics.bytes.inc_by(new - old as i64);
                    }
                    None => {
                        self.metrics.entries.inc();
                        self.metrics.bytes.inc_by(new);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "session cache: could not store an answer"),
        }
    }

    /// Sweeps entries that can no longer be served; true when there is room afterwards.
    fn make_room(&self, now: u64) -> bool {
        let generation = self.generation.load(Ordering::SeqCst);
        let swept = self.store.cache_retain(|_, v| {
            EntryHeader::parse(v)
                .is_some_and(|h| h.generation == generation && now < h.stale_until(self.max_stale))
        });
        if let Err(e) = swept {
            tracing::warn!(error = %e, "session cache: sweep failed");
        }
        self.refresh_gauges();
        (self.metrics.entries.get() as usize) < self.max_entries
    }
}

/// The clear header of a stored entry (authenticated as associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntryHeader {
    generation: u64,
    /// Unix ms until which the entry is fresh.
    fresh_until: u64,
    /// Unix ms after which it may not be served at all (the credential's `time-before`).
    hard_until: u64,
}

impl EntryHeader {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = ENTRY_VERSION;
        h[1..9].copy_from_slice(&self.generation.to_be_bytes());
        h[9..17].copy_from_slice(&self.fresh_until.to_be_bytes());
        h[17..25].copy_from_slice(&self.hard_until.to_be_bytes());
        h
    }

    fn parse(v: &[u8]) -> Option<Self> {
        if v.len() < HEADER_LEN || v[0] != ENTRY_VERSION {
            return None;
        }
        let u = |r: std::ops::Range<usize>| <[u8; 8]>::try_from(&v[r]).ok().map(u64::from_be_bytes);
        Some(EntryHeader {
            generation: u(1..9)?,
            fresh_until: u(9..17)?,
            hard_until: u(17..25)?,
        })
    }

    fn stale_until(&self, max_stale: Duration) -> u64 {
        self.fresh_until
            .saturating_add(max_stale.as_millis() as u64)
            .min(self.hard_until)
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn route_tag(route: Route) -> Option<u8> {
    match route {
        Route::ListSessions => Some(1),
        Route::ListAutopilotSessions => Some(2),
        _ => None,
    }
}

fn protocol_tag(protocol: Protocol) -> Option<u8> {
    match protocol {
        Protocol::Grpc => Some(1),
        Protocol::GrpcWeb => Some(2),
        Protocol::GrpcWebText => Some(3),
        Protocol::Rest => Some(4),
        Protocol::Http | Protocol::GrpcWebSocket | Protocol::WebSocket => None,
    }
}

/// id ‖ route ‖ protocol ‖ 16 bytes of SHA-256 over the request headers that shape the bytes
/// of the answer (exact content type, accept, the encodings the caller accepts, and the
/// `Origin` litd's CORS headers answer).
fn cache_key(id: &[u8; ID_LEN], route: u8, protocol: u8, headers: &HeaderMap) -> Vec<u8> {
    let mut h = Sha256::new();
    for name in [
        "content-type",
        "accept",
        "accept-encoding",
        "grpc-accept-encoding",
        "origin",
    ] {
        for v in headers.get_all(name) {
            h.update(name.as_bytes());
            h.update(b":");
            h.update(v.as_bytes());
        }
        h.update(b"\n");
    }
    let variant = h.finalize();
    let mut key = Vec::with_capacity(ID_LEN + 2 + 16);
    key.extend_from_slice(id);
    key.push(route);
    key.push(protocol);
    key.extend_from_slice(&variant[..16]);
    key
}

/// The method and URI of a canonical list call: POST for the gRPC family, a plain GET (no
/// query) for REST.
fn shape_ok(protocol: Protocol, method: &Method, uri: &http::Uri) -> bool {
    match protocol {
        Protocol::Grpc | Protocol::GrpcWeb | Protocol::GrpcWebText => method == Method::POST,
        Protocol::Rest => method == Method::GET && uri.query().is_none_or(str::is_empty),
        Protocol::Http | Protocol::GrpcWebSocket | Protocol::WebSocket => false,
    }
}

/// Whether `body` is the empty request message (an uncompressed empty frame, or no REST body);
/// anything else is forwarded for litd to judge, never answered from the cache.
fn is_empty_list_request(protocol: Protocol, body: &Bytes) -> bool {
    match protocol {
        Protocol::Grpc | Protocol::GrpcWeb | Protocol::GrpcWebText => matches!(
            codec::decode_unary(protocol, body),
            Ok(Unary::Proto(m)) if m.is_empty()
        ),
        Protocol::Rest => body.iter().all(u8::is_ascii_whitespace),
        Protocol::Http | Protocol::GrpcWebSocket | Protocol::WebSocket => false,
    }
}

/// litd's verdict on an answer: only HTTP 200 with an OK status (grpc-status 0 wherever the
/// protocol puts it, [`status_of`]) is OK; a gRPC answer with no status at all is unknown.
fn verdict(protocol: Protocol, a: &Answer) -> Verdict {
    if a.status != StatusCode::OK {
        return Verdict::NotOk;
    }
    match status_of(protocol, a) {
        Some(s) if s.code() == tonic::Code::Ok => Verdict::Ok,
        Some(_) => Verdict::NotOk,
        None => Verdict::Unknown,
    }
}

/// The fields of `Session` that bound freshness; prost skips the rest (pairing secrets
/// included) without copying them out.
#[derive(Clone, PartialEq, prost::Message)]
struct SessionFreshness {
    #[prost(int32, tag = "2")]
    session_state: i32,
    #[prost(uint64, tag = "4")]
    expiry_timestamp_seconds: u64,
}

/// `ListSessionsResponse` and `ListAutopilotSessionsResponse` (same shape: field 1, sessions).
#[derive(Clone, PartialEq, prost::Message)]
struct ListFreshness {
    #[prost(message, repeated, tag = "1")]
    sessions: Vec<SessionFreshness>,
}

/// Created (0) and InUse (1): the states litd will move on by itself at expiry.
fn is_active(state: i32) -> bool {
    state == 0 || state == 1
}

/// The earliest `expiry_timestamp_seconds` of a created/in-use session in an OK answer:
/// `Some(None)` when there is none, `None` when the answer cannot be decoded (then it is not
/// stored: litgate cannot tell how long it stays true).
fn earliest_active_expiry(protocol: Protocol, body: &Bytes) -> Option<Option<u64>> {
    use prost::Message;
    let expiries: Vec<u64> = match protocol {
        Protocol::Grpc | Protocol::GrpcWeb | Protocol::GrpcWebText => {
            // Compressed, or not one message: not something litgate can vouch for.
            let msg = codec::answer_message(protocol, body)?;
            ListFreshness::decode(msg)
                .ok()?
                .sessions
                .into_iter()
                .filter(|s| is_active(s.session_state))
                .map(|s| s.expiry_timestamp_seconds)
                .collect()
        }
        Protocol::Rest => {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            let sessions = match v.get("sessions") {
                None | Some(serde_json::Value::Null) => return Some(None),
                Some(serde_json::Value::Array(a)) => a,
                Some(_) => return None,
            };
            let mut out = Vec::new();
            for s in sessions {
                let field = |a: &str, b: &str| s.get(a).or_else(|| s.get(b));
                let state = match field("session_state", "sessionState") {
                    None => 0,
                    Some(serde_json::Value::Number(n)) => {
                        n.as_i64().and_then(|n| i32::try_from(n).ok())?
                    }
                    Some(serde_json::Value::String(name)) => match name.as_str() {
                        "STATE_CREATED" => 0,
                        "STATE_IN_USE" => 1,
                        "STATE_REVOKED" => 2,
                        "STATE_EXPIRED" => 3,
                        "STATE_RESERVED" => 4,
                        _ => return None,
                    },
                    Some(_) => return None,
                };
                if !is_active(state) {
                    continue;
                }
                let expiry = match field("expiry_timestamp_seconds", "expiryTimestampSeconds") {
                    None => 0,
                    Some(serde_json::Value::String(t)) => t.parse().ok()?,
                    Some(serde_json::Value::Number(n)) => n.as_u64()?,
                    Some(_) => return None,
                };
                out.push(expiry);
            }
            out
        }
        Protocol::Http | Protocol::GrpcWebSocket | Protocol::WebSocket => return None,
    };
    // An expiry of 0 is "unset", not 1970.
    Some(expiries.into_iter().filter(|e| *e > 0).min())
}

fn put_headers(out: &mut BytesMut, h: Option<&HeaderMap>) {
    let Some(h) = h else {
        out.put_u8(0);
        return;
    };
    out.put_u8(1);
    out.put_u16(h.len() as u16);
    for (k, v) in h {
        out.put_u16(k.as_str().len() as u16);
        out.put_slice(k.as_str().as_bytes());
        out.put_u32(v.len() as u32);
        out.put_slice(v.as_bytes());
    }
}

fn get_headers(b: &mut Bytes) -> Option<Option<HeaderMap>> {
    if !b.has_remaining() {
        return None;
    }
    if b.get_u8() == 0 {
        return Some(None);
    }
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_u16();
    let mut h = HeaderMap::with_capacity(n as usize);
    for _ in 0..n {
        if b.remaining() < 2 {
            return None;
        }
        let kl = b.get_u16() as usize;
        if b.remaining() < kl + 4 {
            return None;
        }
        let k = HeaderName::from_bytes(&b.split_to(kl)).ok()?;
        let vl = b.get_u32() as usize;
        if b.remaining() < vl {
            return None;
        }
        let v = HeaderValue::from_maybe_shared(b.split_to(vl)).ok()?;
        h.append(k, v);
    }
    Some(Some(h))
}

/// stored_at ms ‖ status ‖ headers ‖ body length ‖ body ‖ trailers (the sealed plaintext).
fn encode_captured(stored_at: u64, c: &Answer) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(c.body.len() + 256);
    out.put_u64(stored_at);
    out.put_u16(c.status.as_u16());
    put_headers(&mut out, Some(&c.headers));
    out.put_u32(c.body.len() as u32);
    out.put_slice(&c.body);
    put_headers(&mut out, c.trailers.as_ref());
    out.to_vec()
}

fn decode_captured(mut b: Bytes) -> Option<Answer> {
    if b.remaining() < 10 {
        return None;
    }
    let _stored_at = b.get_u64();
    let status = StatusCode::from_u16(b.get_u16()).ok()?;
    let headers = get_headers(&mut b)??;
    if b.remaining() < 4 {
        return None;
    }
    let len = b.get_u32() as usize;
    if b.remaining() < len {
        return None;
    }
    // A slice of the decrypted buffer: the body is not copied again.
    let body = b.split_to(len);
    let trailers = get_headers(&mut b)?;
    b.is_empty().then_some(Answer {
        status,
        headers,
        body,
        trailers,
    })
}

/// A response replaying captured bytes; `stale` adds the `litgate-cache: stale` header.
fn replay(c: Answer, stale: bool) -> Response {
    let mut resp = c.into_response();
    if stale {
        resp.headers_mut()
            .insert(STALE_HEADER, HeaderValue::from_static(STALE_VALUE));
    }
    resp
}

#[cfg(test)]
mod tests;
