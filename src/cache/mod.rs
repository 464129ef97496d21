//! The session cache (`docs/design.md`, "The session cache"): answers `ListSessions` and `ListAutopilotSessions`, in
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
mod entry;
mod flight;
mod freshness;
mod key;
mod metrics;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{header, HeaderName, HeaderValue, StatusCode};

pub use self::metrics::CacheMetrics;
use self::{
    config::CacheConfig,
    crypto::{CredentialKeys, ID_LEN},
    entry::EntryHeader,
    flight::Waiter,
    freshness::earliest_active_expiry,
    key::{cache_key, is_empty_list_request, protocol_tag, route_tag, shape_ok, MAX_REQUEST_BYTES},
};
use crate::{
    body::{self, Request, Response, ResponseFuture},
    clock::SharedClock,
    error::Error,
    grpc::{
        codec,
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

/// Answer headers not replayed: recomputed by the server for every answer. Everything else
/// litd sent (gRPC initial metadata, grpc-gateway's `Grpc-Metadata-*`, CORS headers, whose
/// `Origin` is part of the key) is part of the answer and replayed with it; hop-by-hop headers
/// never get this far (the upstream client drops them).
const RECOMPUTED_HEADERS: [HeaderName; 2] = [header::DATE, header::CONTENT_LENGTH];

type Forward = Arc<dyn Fn(Request) -> ResponseFuture + Send + Sync>;

/// The session cache. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("ttl", &self.inner.ttl())
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    clock: SharedClock,
    forward: Forward,
    upstream_label: String,
    /// `ttl` and `max_stale` in milliseconds: a reload swaps them (`Cache::set_freshness`).
    ttl_ms: AtomicU64,
    max_stale_ms: AtomicU64,
    max_entries: usize,
    max_entry_bytes: usize,
    salt: [u8; 32],
    generation: AtomicU64,
    inflight: Mutex<HashMap<Vec<u8>, Waiter>>,
    metrics: CacheMetrics,
}

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
    /// Applies a reloaded `cache.ttl` and `cache.max_stale` (validated together) to answers
    /// stored from now on and to staleness checks; answers already stored keep the freshness
    /// they were stored with.
    pub(crate) fn set_freshness(&self, cfg: &CacheConfig) {
        self.inner.ttl_ms.store(millis(cfg.ttl), Ordering::Relaxed);
        self.inner
            .max_stale_ms
            .store(millis(cfg.max_stale), Ordering::Relaxed);
    }

    /// Builds the cache over `store`, forwarding misses to `upstream` (litd; `label` names it
    /// in errors), counting into `metrics` (registered by the caller, or not).
    pub fn new<S>(
        cfg: &CacheConfig,
        store: Store,
        clock: SharedClock,
        upstream: S,
        label: impl Into<String>,
        metrics: CacheMetrics,
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
                ttl_ms: AtomicU64::new(millis(cfg.ttl)),
                max_stale_ms: AtomicU64::new(millis(cfg.max_stale)),
                max_entries: cfg.max_entries,
                max_entry_bytes: cfg.max_entry_bytes,
                salt,
                generation: AtomicU64::new(generation),
                inflight: Mutex::new(HashMap::new()),
                metrics,
            }),
        })
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
}

impl Inner {
    /// How long a stored answer is served without asking litd (`cache.ttl`).
    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed))
    }

    /// How long past its freshness an answer may be served while litd is down.
    fn max_stale(&self) -> Duration {
        Duration::from_millis(self.max_stale_ms.load(Ordering::Relaxed))
    }
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
        let Some(captured) = entry::open(keys, key, &value) else {
            self.metrics.undecryptable.inc();
            self.remove(key);
            return Lookup::Absent;
        };
        let now = self.now_ms();
        if now < h.fresh_until {
            Lookup::Fresh(captured)
        } else if now < h.stale_until(self.max_stale()) {
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
        let fresh_until = (now.saturating_add(millis(self.ttl())))
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
        };
        let value = entry::seal(keys, key, &header, now, captured);
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
            EntryHeader::parse(v).is_some_and(|h| {
                h.generation == generation && now < h.stale_until(self.max_stale())
            })
        });
        if let Err(e) = swept {
            tracing::warn!(error = %e, "session cache: sweep failed");
        }
        self.refresh_gauges();
        (self.metrics.entries.get() as usize) < self.max_entries
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

/// A duration in whole milliseconds, saturating (config durations are far below the limit).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
