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
//!   sealed with AES-256-GCM under a key derived from the credential ([`crypto`]), with a
//!   random nonce and the key plus the clear header as associated data. The sled file alone gives
//!   neither the way to find an entry nor to read it; an entry that does not open is a miss
//!   (counted), never an error. A hit decrypts in place and replays bytes: no protobuf work.
//! - **Bounds**: `max_entries`, `max_bytes` (keys and sealed values together) and
//!   `max_entry_bytes`, checked and written under one lock so concurrent stores cannot
//!   overshoot them; when full, entries that can no longer be served are swept first.
//! - **Replays** ([`replay`]): an answer is in clear only while it is being sent, one copy per
//!   entry however many callers it is sent to, and all of them together within
//!   `max_replay_bytes`; a call that does not fit is passed through to litd.
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
mod hot;
mod key;
mod metrics;
mod replay;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{header, HeaderName, HeaderValue, StatusCode};

pub use self::metrics::CacheMetrics;
use self::{
    config::CacheConfig,
    crypto::{CredentialKeys, ID_LEN},
    entry::{EntryHeader, Unopened},
    flight::Waiter,
    freshness::earliest_active_expiry,
    key::{
        cache_key, is_empty_list_request, protocol_tag, route_tag, shape_ok, MAX_REQUEST_BYTES,
        REQUEST_LIMIT_NAME,
    },
    replay::Replays,
};
use crate::{
    body::{self, Request, Response, ResponseFuture},
    clock::SharedClock,
    error::Error,
    grpc::{
        codec,
        status::{self, status_of, Answer},
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
    max_bytes: usize,
    salt: [u8; 32],
    generation: AtomicU64,
    inflight: Mutex<HashMap<Vec<u8>, Waiter>>,
    /// Held to decide whether an entry fits and to write it, so that concurrent stores cannot
    /// both take the last place. Removals need not hold it: they only make room.
    admission: Mutex<()>,
    replays: Arc<Replays>,
    /// The generation last written to the store.
    persisted: AtomicU64,
    /// Wakes the task that writes generation bumps to the store (started by the first one).
    persist_wanted: Arc<tokio::sync::Notify>,
    persister_started: std::sync::atomic::AtomicBool,
    /// The newest sealed entries, also in memory ([`hot`]).
    hot: hot::Hot,
    metrics: CacheMetrics,
}

/// How long the task that writes generation bumps to the store waits for more of them before
/// it writes: one trip to the blocking pool for every write in that window, not one per write.
/// What a crash can lose grows by this much (see [`Cache::invalidate`]).
const PERSIST_COALESCE: Duration = Duration::from_millis(25);

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone (shutdown): write a bump still waiting, and end the task.
        // A small in-memory sled write, once.
        let generation = self.generation.load(Ordering::SeqCst);
        if self.persisted.load(Ordering::SeqCst) < generation {
            if let Err(e) = self.store.raise_cache_generation(generation) {
                tracing::warn!(error = %e, "session cache: could not persist the generation");
            }
        }
        self.persist_wanted.notify_one();
    }
}

/// What one upstream call for a key ended in, shared by every caller waiting on it.
enum Outcome {
    /// litd answered (OK or not).
    Answer(Arc<Answer>),
    /// litd could not be reached, or the answer broke off.
    Unreachable(String),
    /// The replay budget could not hold the answer (stored, if it could be, but not sent):
    /// each caller passes through to litd.
    OverBudget,
}

/// What a lookup may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    /// Only a fresh entry (before asking litd).
    Fresh,
    /// A fresh or a stale one (litd is unreachable).
    Stale,
}

/// What a lookup found.
enum Lookup {
    Fresh(Answer),
    Stale(Answer),
    /// There is a servable entry, but the replay budget cannot hold it now.
    OverBudget,
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
        let replays = Replays::new(
            cfg.max_replay_bytes,
            metrics.replay_bytes.clone(),
            metrics.replay_overflows.clone(),
            metrics.replay_shared.clone(),
        );
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
                max_bytes: cfg.max_bytes,
                salt,
                generation: AtomicU64::new(generation),
                inflight: Mutex::new(HashMap::new()),
                admission: Mutex::new(()),
                replays,
                persisted: AtomicU64::new(generation),
                persist_wanted: Arc::new(tokio::sync::Notify::new()),
                persister_started: std::sync::atomic::AtomicBool::new(false),
                hot: hot::Hot::new(hot::HOT_BYTES.min(cfg.max_bytes)),
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
        let raw = codec::read_body_within(body, MAX_REQUEST_BYTES, REQUEST_LIMIT_NAME).await?;
        // Kept to pass the call through if its answer cannot be replayed from here.
        let again = (parts.clone(), raw.clone());
        let again = move || Request::from_parts(again.0, body::full(again.1));
        let req = Request::from_parts(parts, body::full(raw.clone()));
        if !is_empty_list_request(protocol, &raw) {
            inner.metrics.bypasses.inc();
            return (inner.forward)(req).await;
        }

        let keys = Arc::new(CredentialKeys::derive(&inner.salt, &credential.raw));
        let key = cache_key(keys.id(), route_tag, protocol_tag, req.headers());
        match inner.lookup_off(&key, &keys, Accept::Fresh).await {
            Lookup::Fresh(c) => {
                inner.metrics.hits.inc();
                return Ok(replay(c, false));
            }
            Lookup::OverBudget => return inner.over_budget(req).await,
            Lookup::Stale(_) | Lookup::Absent => {}
        }
        if inner.replays.spent() {
            // litd's answer could not be replayed from here: let it stream instead.
            inner.metrics.replay_overflows.inc();
            return inner.over_budget(req).await;
        }
        inner.metrics.misses.inc();
        let hard_until = credential.time_before().map(ms).unwrap_or(u64::MAX);
        let outcome = self
            .fetch_shared(key.clone(), keys, protocol, hard_until, req)
            .await;
        match &*outcome {
            Outcome::Answer(c) => Ok(replay(Answer::clone(c), false)),
            Outcome::OverBudget => inner.over_budget(again()).await,
            Outcome::Unreachable(reason) => {
                // Looked up again: a refusal seen meanwhile has dropped the entry.
                let keys = Arc::new(CredentialKeys::derive(&inner.salt, &credential.raw));
                match inner.lookup_off(&key, &keys, Accept::Stale).await {
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
                    // Passing through is no way out while litd is unreachable.
                    Lookup::OverBudget | Lookup::Absent => Err(Error::Upstream {
                        addr: inner.upstream_label.clone(),
                        reason: reason.clone(),
                    }),
                }
            }
        }
    }

    /// Completes a session write (`result` is litd's answer to AddSession, RevokeSession,
    /// AddAutopilotSession or RevokeAutopilotSession, or the policy's refusal): the answer
    /// streams through unchanged, and every entry is invalidated as the status goes past, before
    /// the caller gets it (at once when the head carries it: REST, trailers-only gRPC), unless
    /// litd clearly refused the write. An answer that breaks off, ends without a status or is
    /// dropped before its end invalidates too: the write may have happened.
    pub async fn after_write(
        &self,
        protocol: Protocol,
        result: Result<Response, Error>,
    ) -> Result<Response, Error> {
        let resp = result?;
        if resp.status() != StatusCode::OK {
            // Any HTTP error: litd did not take the write.
            return Ok(resp);
        }
        let cache = self.clone();
        Ok(status::watch(protocol, resp, move |outcome| {
            if write_may_have_happened(outcome) {
                cache.invalidate();
            }
        }))
    }

    /// Invalidates every entry. The generation moves on in memory first, so from the moment
    /// this returns no entry written before it is served (lookups and stores check it).
    /// Writing the bump to the store and dropping the old entries happen off the answer path,
    /// coalesced: a background task does both for every bump of the last [`PERSIST_COALESCE`]
    /// in one trip to the blocking pool. A crash before that and sled's next flush (at most
    /// about half a second later) can bring an old entry back for at most its TTL. Never
    /// waits: callable where nothing can be awaited (a body's poll).
    pub fn invalidate(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        let inner = &self.inner;
        inner.hot.clear();
        if !inner.persister_started.load(Ordering::Acquire) {
            // Outside a runtime (a body dropped elsewhere) the next bump starts the writer.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                if !inner.persister_started.swap(true, Ordering::AcqRel) {
                    rt.spawn(persist_generations(
                        Arc::downgrade(inner),
                        inner.persist_wanted.clone(),
                    ));
                }
            }
        }
        inner.persist_wanted.notify_one();
    }
}

/// Whether a session write litd answered with `outcome` (HTTP 200) may have happened: all but
/// a gRPC status other than OK. UNAVAILABLE counts as "may have": litgate itself ends an answer
/// that broke off mid-way with it.
fn write_may_have_happened(outcome: status::Outcome) -> bool {
    use status::Outcome as O;
    match outcome {
        O::Grpc(code) => matches!(code, tonic::Code::Ok | tonic::Code::Unavailable),
        O::Http(s) => s.is_success(),
        O::NoStatus | O::Broken | O::Cancelled => true,
    }
}

/// Writes generation bumps to the store and drops the entries they invalidated, until the
/// cache is gone.
async fn persist_generations(inner: std::sync::Weak<Inner>, wanted: Arc<tokio::sync::Notify>) {
    loop {
        wanted.notified().await;
        tokio::time::sleep(PERSIST_COALESCE).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || inner.persist_generation()).await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "session cache: the generation write did not finish");
        }
    }
}

impl Inner {
    /// Writes the current generation to the store, then drops every entry older than it
    /// (blocking: on the blocking pool).
    fn persist_generation(&self) {
        let current = self.generation.load(Ordering::SeqCst);
        if self.persisted.load(Ordering::SeqCst) >= current {
            return;
        }
        match self.store.raise_cache_generation(current) {
            Ok(()) => {
                self.persisted.fetch_max(current, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::warn!(error = %e, "session cache: could not persist the generation bump");
            }
        }
        if self.metrics.entries.get() <= 0 {
            // Nothing to drop (an entry being stored meanwhile under an older generation is
            // never served: lookups check the generation).
            return;
        }
        // Only entries older than this generation: answers stored since are current.
        let dropped = self
            .store
            .cache_retain(|_, v| EntryHeader::parse(v).is_some_and(|h| h.generation >= current));
        self.dropped(dropped, "could not drop old entries");
    }

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

    /// Accounts for entries removed (`removed`: how many and their size), or logs `failed`.
    fn dropped(&self, removed: Result<(usize, usize), StoreError>, failed: &str) {
        match removed {
            Ok((n, b)) => {
                self.metrics.entries.dec_by(n as i64);
                self.metrics.bytes.dec_by(b as i64);
            }
            Err(e) => tracing::warn!(error = %e, "session cache: {failed}"),
        }
    }

    fn remove(&self, key: &[u8]) {
        self.hot.remove(key);
        let removed = self
            .store
            .cache_remove(key)
            .map(|size| size.map_or((0, 0), |s| (1, s)));
        self.dropped(removed, "could not remove an entry");
    }

    /// A call whose answer the replay budget cannot hold: passed through to litd as is.
    async fn over_budget(&self, req: Request) -> Result<Response, Error> {
        tracing::debug!("session cache: replay budget spent; passing the list call through");
        (self.forward)(req).await
    }

    /// A fresh entry kept in memory ([`Inner::lookup_hot`]), else [`Inner::lookup`] on the
    /// blocking pool: the sled read and the removal of an entry found dead never run on a
    /// runtime thread (a runtime serves every connection it accepted; a store waiting on its
    /// disk must not stall them).
    async fn lookup_off(
        self: &Arc<Self>,
        key: &[u8],
        keys: &Arc<CredentialKeys>,
        accept: Accept,
    ) -> Lookup {
        if let Some(found) = self.lookup_hot(key, keys) {
            return found;
        }
        let (inner, key, keys) = (self.clone(), key.to_vec(), keys.clone());
        match tokio::task::spawn_blocking(move || inner.lookup(&key, &keys, accept)).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "session cache: a lookup did not finish; a miss");
                Lookup::Absent
            }
        }
    }

    /// A fresh entry kept in memory, checked and opened as [`Inner::lookup`] does with one
    /// from the store, on this thread: no store call, only the decryption (about as much CPU
    /// as sending the answer costs). Anything else (not kept, no longer fresh, from an older
    /// generation, not opening) is the store's to decide: `None`.
    fn lookup_hot(&self, key: &[u8], keys: &CredentialKeys) -> Option<Lookup> {
        let value = self.hot.get(key)?;
        let h = EntryHeader::parse(&value)?;
        if h.generation != self.generation.load(Ordering::SeqCst) || self.now_ms() >= h.fresh_until
        {
            return None;
        }
        match entry::open(keys, key, &value, &self.replays) {
            Ok(answer) => Some(Lookup::Fresh(answer)),
            Err(Unopened::OverBudget) => Some(Lookup::OverBudget),
            Err(Unopened::Undecryptable) => {
                self.hot.remove(key);
                None
            }
        }
    }

    fn lookup(&self, key: &[u8], keys: &CredentialKeys, accept: Accept) -> Lookup {
        let value = match self.store.cache_get(key) {
            Ok(Some(v)) => v,
            Ok(None) => return Lookup::Absent,
            Err(e) => {
                tracing::warn!(error = %e, "session cache: read failed; treating as a miss");
                return Lookup::Absent;
            }
        };
        let Some(h) = EntryHeader::parse(&value) else {
            if !entry::is_previous_layout(&value) {
                self.metrics.undecryptable.inc();
            }
            self.remove(key);
            return Lookup::Absent;
        };
        if h.generation != self.generation.load(Ordering::SeqCst) {
            self.remove(key);
            return Lookup::Absent;
        }
        // The clear header decides first; it is authenticated when the entry opens.
        let now = self.now_ms();
        let fresh = now < h.fresh_until;
        if !fresh && now >= h.stale_until(self.max_stale()) {
            self.remove(key);
            return Lookup::Absent;
        }
        if !fresh && accept == Accept::Fresh {
            return Lookup::Absent;
        }
        match entry::open(keys, key, &value, &self.replays) {
            Ok(answer) if fresh => {
                self.hot.put(key, &value);
                Lookup::Fresh(answer)
            }
            Ok(answer) => Lookup::Stale(answer),
            Err(Unopened::OverBudget) => Lookup::OverBudget,
            Err(Unopened::Undecryptable) => {
                self.metrics.undecryptable.inc();
                self.remove(key);
                Lookup::Absent
            }
        }
    }

    async fn fetch_and_store(
        self: &Arc<Self>,
        key: &[u8],
        keys: &Arc<CredentialKeys>,
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
        // Sealing and writing (or dropping) run on the blocking pool, like every store call.
        let (inner, key, keys) = (self.clone(), key.to_vec(), keys.clone());
        let stored = tokio::task::spawn_blocking(move || {
            match verdict(protocol, &captured) {
                Verdict::Ok => {
                    inner.store_answer(&key, &keys, protocol, hard_until, generation, &captured);
                }
                Verdict::NotOk => {
                    // litd refused this credential (a list call has no arguments to refuse):
                    // no entry of it may be served, not even stale.
                    inner.hot.remove_prefix(&key[..ID_LEN]);
                    let dropped = inner.store.cache_remove_prefix(&key[..ID_LEN]);
                    inner.dropped(dropped, "could not drop a refused credential's entries");
                }
                Verdict::Unknown => {}
            }
            captured
        })
        .await;
        let mut captured = match stored {
            Ok(captured) => captured,
            Err(e) => return Outcome::Unreachable(format!("the cache's store task failed: {e}")),
        };
        // Charged while any caller is still being sent it.
        match self.replays.charged(std::mem::take(&mut captured.body)) {
            Some(body) => {
                captured.body = body;
                Outcome::Answer(Arc::new(captured))
            }
            None => Outcome::OverBudget,
        }
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
        let header = EntryHeader {
            generation,
            fresh_until,
            hard_until,
        };
        let value = entry::seal(keys, key, &header, now, captured);
        let size = key.len() + value.len();
        let _admitted = self
            .admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::SeqCst) != generation {
            // A session write completed while litd was answering: the answer may predate it.
            return;
        }
        // An entry this one replaces (a refresh) makes room for it.
        let replaced = match self.store.cache_get(key) {
            Ok(old) => old.map_or(0, |v| key.len() + v.len()),
            Err(_) => 0,
        };
        let fits = self.fits(size, replaced) || (self.make_room(now) && self.fits(size, replaced));
        if !fits {
            tracing::debug!("session cache: full; answer served but not stored");
            return;
        }
        match self.store.cache_put(key, &value) {
            Ok(old) => {
                // The copy in memory is taken again from the store on the next hit.
                self.hot.remove(key);
                if let Some(old) = old {
                    self.metrics.entries.dec();
                    self.metrics.bytes.dec_by(old as i64);
                }
                self.metrics.entries.inc();
                self.metrics.bytes.inc_by(size as i64);
            }
            Err(e) => tracing::warn!(error = %e, "session cache: could not store an answer"),
        }
    }

    /// Whether an entry of `size` bytes fits the bounds in place of one of `replaced` bytes
    /// (0: none), called under `admission`.
    fn fits(&self, size: usize, replaced: usize) -> bool {
        let entries = self.metrics.entries.get().max(0) as usize + usize::from(replaced == 0);
        let bytes = (self.metrics.bytes.get().max(0) as usize).saturating_sub(replaced);
        entries <= self.max_entries && bytes.saturating_add(size) <= self.max_bytes
    }

    /// Sweeps entries that can no longer be served, then counts what is left afresh (a scan,
    /// only when the cache looks full: the gauges are kept by increments, and the store may
    /// have been changed under them). True when the count could have changed.
    fn make_room(&self, now: u64) -> bool {
        let generation = self.generation.load(Ordering::SeqCst);
        self.hot.clear();
        let swept = self.store.cache_retain(|_, v| {
            EntryHeader::parse(v).is_some_and(|h| {
                h.generation == generation && now < h.stale_until(self.max_stale())
            })
        });
        if let Err(e) = swept {
            tracing::warn!(error = %e, "session cache: sweep failed");
        }
        match self.store.cache_usage() {
            Ok((n, b)) => {
                self.metrics.entries.set(n as i64);
                self.metrics.bytes.set(b as i64);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "session cache: could not measure the store");
                false
            }
        }
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
