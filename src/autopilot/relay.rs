//! The relay face: litd's `autopilot.address` points here, so every registration litd makes
//! goes through litgate (`design.md` §5). It serves `autopilotserverrpc.Autopilot` and
//! forwards to the real server over the shared channel, adding:
//! - `Terms` and `ListFeatures` answered from the catalogue (fresh, or stale within bounds);
//! - `RegisterSession` held to `[privacy]` and to what the public face approved, before the
//!   server is contacted, and recorded in the ledger on success;
//! - `ActivateSession` recorded; `RevokeSession` forwarded only for keys in the ledger (litd
//!   announces every session type's revocation, which would leak non-autopilot keys);
//! - reconciliation of the ledger with litd's `ListAutopilotSessions`.
//!
//! The server's own errors go back to litd unchanged. Never logs keys in full.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tonic::{Request, Response, Status};

use super::{
    catalogue::Catalogue,
    client::Autopilot,
    policy::APPROVAL_BOUNDS,
    privacy::{FlagPolicy, FlagRefusal},
};
use crate::{
    clock::SharedClock,
    error::Error,
    methods::LIST_AUTOPILOT_SESSIONS,
    proto::{
        autopilotserverrpc::{
            self as aps, autopilot_server, ActivateSessionRequest, ActivateSessionResponse,
            ListFeaturesRequest, ListFeaturesResponse, RegisterSessionRequest,
            RegisterSessionResponse, RevokeSessionRequest, RevokeSessionResponse, TermsRequest,
            TermsResponse,
        },
        litrpc::SessionState,
    },
    store::{ApprovalId, LedgerEntry, Store},
    upstream::{litd::CallError, Upstream},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    outcome: &'static str,
}

/// The relay service.
#[derive(Debug, Clone)]
pub struct Relay {
    autopilot: Autopilot,
    catalogue: Arc<Catalogue>,
    store: Store,
    clock: SharedClock,
    flags: FlagPolicy,
    calls: Family<CallLabels, Counter>,
}

impl Relay {
    /// Builds the relay and registers its metrics.
    pub fn new(
        autopilot: Autopilot,
        catalogue: Arc<Catalogue>,
        store: Store,
        clock: SharedClock,
        deny_clear: &[String],
        registry: &mut Registry,
    ) -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Calls litd made to the relay, by method and outcome (forwarded, refused, answered_locally, failed)",
            calls.clone(),
        );
        Relay {
            autopilot,
            catalogue,
            store,
            clock,
            flags: FlagPolicy::new(deny_clear),
            calls,
        }
    }

    /// The tonic service for the relay listener.
    pub fn service(self) -> autopilot_server::AutopilotServer<Relay> {
        autopilot_server::AutopilotServer::new(self)
    }

    fn count(&self, method: &'static str, outcome: &'static str) {
        self.calls
            .get_or_create(&CallLabels { method, outcome })
            .inc();
    }

    fn now_secs(&self) -> u64 {
        self.clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// The policy checks of RegisterSession; `Ok(Some(id))` names the approval it matches.
    async fn check_registration(
        &self,
        r: &RegisterSessionRequest,
    ) -> Result<Option<ApprovalId>, Status> {
        if r.responder_pub_key.len() != 33 {
            return Err(Status::invalid_argument(format!(
                "responder_pub_key: must be a 33-byte compressed public key, got {} bytes",
                r.responder_pub_key.len()
            )));
        }
        // The public face's flag checks, in its order: known bits, each feature, the session.
        let refused = |r: FlagRefusal| {
            Status::new(r.code(), format!("litgate refused the registration: {r}"))
        };
        self.flags.check_known(r.privacy_flags).map_err(refused)?;
        let mut features: Vec<String> = r.feature_configs.keys().cloned().collect();
        features.sort();
        let snapshot = self.catalogue.get().await.map_err(|e| status_of(&e))?;
        let mut needed = 0u64;
        for f in &features {
            let Some(feature) = snapshot.features.get(f) else {
                return Err(Status::failed_precondition(format!(
                    "litgate refused the registration: {f} is not a feature provided by the Autopilot server"
                )));
            };
            self.flags
                .check_feature(f, feature.privacy_flags)
                .map_err(refused)?;
            needed |= feature.privacy_flags;
        }
        self.flags
            .check_session(r.privacy_flags, needed)
            .map_err(refused)?;
        // Hold the registration to what the public face approved for these features, if it
        // approved anything recently; sessions created around the public face have no approval
        // and are held to [privacy] only.
        let now = self.now_secs();
        let since = now.saturating_sub(APPROVAL_BOUNDS.max_age.as_secs());
        let store = self.store.clone();
        let wanted = features.clone();
        let approvals = tokio::task::spawn_blocking(move || store.approvals_for(&wanted, since))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut matching = approvals.into_iter().peekable();
        if matching.peek().is_none() {
            return Ok(None);
        }
        let found = matching
            .find(|(_, a)| a.privacy_flags == r.privacy_flags)
            .map(|(id, _)| id);
        match found {
            Some(id) => Ok(Some(id)),
            None => Err(Status::failed_precondition(
                "litgate refused the registration: its privacy flags differ from the ones litgate approved for this session",
            )),
        }
    }
}

fn status_of(e: &Error) -> Status {
    Status::new(e.code(), e.to_string())
}

fn hex_key(k: &[u8]) -> String {
    hex::encode(k)
}

fn version(v: &Option<aps::Version>) -> String {
    v.as_ref()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.patch))
        .unwrap_or_default()
}

/// litd's session id for a key: bytes 1..5 of the compressed key.
fn session_id(key: &[u8]) -> String {
    key.get(1..5).map(hex::encode).unwrap_or_default()
}

#[tonic::async_trait]
impl autopilot_server::Autopilot for Relay {
    async fn terms(&self, _req: Request<TermsRequest>) -> Result<Response<TermsResponse>, Status> {
        let res = self.catalogue.terms().await;
        self.count(
            "Terms",
            if res.is_ok() {
                "answered_locally"
            } else {
                "failed"
            },
        );
        res.map(Response::new).map_err(|e| status_of(&e))
    }

    async fn list_features(
        &self,
        _req: Request<ListFeaturesRequest>,
    ) -> Result<Response<ListFeaturesResponse>, Status> {
        let res = self.catalogue.get().await;
        self.count(
            "ListFeatures",
            if res.is_ok() {
                "answered_locally"
            } else {
                "failed"
            },
        );
        let snapshot = res.map_err(|e| status_of(&e))?;
        Ok(Response::new(ListFeaturesResponse {
            features: (*snapshot.features).clone(),
        }))
    }

    async fn register_session(
        &self,
        req: Request<RegisterSessionRequest>,
    ) -> Result<Response<RegisterSessionResponse>, Status> {
        let r = req.into_inner();
        let approval = match self.check_registration(&r).await {
            Ok(a) => a,
            Err(s) => {
                self.count("RegisterSession", "refused");
                tracing::warn!(session = %session_id(&r.responder_pub_key), reason = %s.message(), "registration refused");
                return Err(s);
            }
        };
        let resp = match self.autopilot.client().register_session(r.clone()).await {
            Ok(resp) => resp.into_inner(),
            Err(s) => {
                self.count("RegisterSession", "failed");
                return Err(s);
            }
        };
        self.count("RegisterSession", "forwarded");
        let mut features: Vec<String> = r.feature_configs.keys().cloned().collect();
        features.sort();
        let group_id = if r.group_responder_key.is_empty() {
            session_id(&r.responder_pub_key)
        } else {
            session_id(&r.group_responder_key)
        };
        let entry = LedgerEntry {
            responder_key: hex_key(&r.responder_pub_key),
            session_id: session_id(&r.responder_pub_key),
            group_id,
            features,
            privacy_flags: r.privacy_flags,
            lit_version: version(&r.lit_version),
            lnd_version: version(&r.lnd_version),
            registered_at: self.now_secs(),
            initiator_key: hex_key(&resp.initiator_pub_key),
            last_activation: None,
            last_activation_outcome: None,
            revoked_at: None,
            revoked_by: None,
        };
        if let Err(e) = self.store.ledger_put(&r.responder_pub_key, &entry) {
            // The server has the registration; reconciliation cannot see it without the
            // ledger, so make the failure loud.
            tracing::error!(error = %e, session = %entry.session_id, "could not record a registration in the ledger");
        }
        if let Some(id) = approval {
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.remove_approval(&id)).await;
        }
        Ok(Response::new(resp))
    }

    async fn activate_session(
        &self,
        req: Request<ActivateSessionRequest>,
    ) -> Result<Response<ActivateSessionResponse>, Status> {
        let key = req.get_ref().responder_pub_key.clone();
        let res = self
            .autopilot
            .client()
            .activate_session(req.into_inner())
            .await;
        self.count(
            "ActivateSession",
            if res.is_ok() { "forwarded" } else { "failed" },
        );
        if let Ok(Some(mut entry)) = self.store.ledger_get(&key) {
            entry.last_activation = Some(self.now_secs());
            entry.last_activation_outcome = Some(match &res {
                Ok(_) => "ok".into(),
                Err(s) => format!("{:?}: {}", s.code(), s.message()),
            });
            if let Err(e) = self.store.ledger_put(&key, &entry) {
                tracing::warn!(error = %e, "could not record an activation");
            }
        }
        res
    }

    async fn revoke_session(
        &self,
        req: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        let key = req.get_ref().responder_pub_key.clone();
        let entry = self
            .store
            .ledger_get(&key)
            .map_err(|e| Status::internal(e.to_string()))?;
        let Some(mut entry) = entry.filter(|e| e.revoked_at.is_none()) else {
            // Not an autopilot registration we relayed (or already revoked): telling the
            // server would only leak the key. litd only logs this call's errors anyway.
            self.count("RevokeSession", "answered_locally");
            return Ok(Response::new(RevokeSessionResponse {}));
        };
        let res = self
            .autopilot
            .client()
            .revoke_session(req.into_inner())
            .await;
        self.count(
            "RevokeSession",
            if res.is_ok() { "forwarded" } else { "failed" },
        );
        if res.is_ok() {
            entry.revoked_at = Some(self.now_secs());
            entry.revoked_by = Some("litd".into());
            if let Err(e) = self.store.ledger_put(&key, &entry) {
                tracing::warn!(error = %e, "could not record a revocation");
            }
        }
        res
    }
}

/// What one reconciliation pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Registrations checked.
    pub checked: usize,
    /// Registrations revoked at the server.
    pub revoked: usize,
    /// Revocations that failed (retried next pass).
    pub failed: usize,
}

/// Compares the ledger with litd's sessions and revokes orphaned registrations at the server.
#[derive(Debug, Clone)]
pub struct Reconciler {
    autopilot: Autopilot,
    upstream: Upstream,
    store: Store,
    clock: SharedClock,
    macaroon: http::HeaderValue,
    grace: Duration,
}

impl Reconciler {
    /// `macaroon_hex` is litgate's own credential for `ListAutopilotSessions`; registrations
    /// younger than `grace` are left alone (their AddAutopilotSession may still be running).
    pub fn new(
        autopilot: Autopilot,
        upstream: Upstream,
        store: Store,
        clock: SharedClock,
        macaroon: http::HeaderValue,
        grace: Duration,
    ) -> Self {
        Reconciler {
            autopilot,
            upstream,
            store,
            clock,
            macaroon,
            grace,
        }
    }

    /// One pass.
    pub async fn run_once(&self) -> Result<ReconcileReport, Error> {
        let mut metadata = http::HeaderMap::new();
        metadata.insert("macaroon", self.macaroon.clone());
        let list = self
            .upstream
            .list_autopilot_sessions(metadata)
            .await
            .map_err(|e| match e {
                // litgate's own credential: litd's refusal is litgate's configuration to fix.
                CallError::Refused(s) => Error::OwnCallRefused {
                    method: LIST_AUTOPILOT_SESSIONS,
                    code: s.code(),
                    message: s.message().to_string(),
                },
                CallError::Unreachable(e) => e,
            })?;
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let sessions: HashMap<String, (i32, u64)> = list
            .sessions
            .iter()
            .map(|s| {
                (
                    hex::encode(&s.local_public_key),
                    (s.session_state, s.expiry_timestamp_seconds),
                )
            })
            .collect();
        let live_states: HashSet<i32> = [
            SessionState::StateCreated as i32,
            SessionState::StateInUse as i32,
        ]
        .into();
        let mut report = ReconcileReport::default();
        for mut entry in self
            .store
            .ledger()?
            .into_iter()
            .filter(|e| e.revoked_at.is_none())
        {
            report.checked += 1;
            let young = now.saturating_sub(entry.registered_at) < self.grace.as_secs();
            let orphaned = match sessions.get(&entry.responder_key) {
                Some((state, expiry)) if live_states.contains(state) => *expiry <= now,
                Some((state, _)) if *state == SessionState::StateReserved as i32 => !young,
                Some(_) => true, // revoked or expired in litd
                None => !young,
            };
            if !orphaned {
                continue;
            }
            let Ok(key) = hex::decode(&entry.responder_key) else {
                continue;
            };
            match self
                .autopilot
                .client()
                .revoke_session(RevokeSessionRequest {
                    responder_pub_key: key.clone(),
                })
                .await
            {
                Ok(_) => {
                    entry.revoked_at = Some(now);
                    entry.revoked_by = Some("reconciliation".into());
                    self.store.ledger_put(&key, &entry)?;
                    report.revoked += 1;
                    tracing::info!(session = %entry.session_id, "revoked an orphaned registration at the Autopilot server");
                }
                Err(s) => {
                    report.failed += 1;
                    tracing::warn!(session = %entry.session_id, error = %s.message(), "revoking an orphaned registration failed");
                }
            }
        }
        Ok(report)
    }

    /// Runs a pass every `every` until aborted.
    pub fn spawn(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.run_once().await {
                    tracing::warn!(error = %e, "reconciliation pass failed");
                }
            }
        })
    }
}
