//! Reconciliation: compares the relay's ledger with litd's autopilot sessions and revokes, at
//! the Autopilot server, registrations litd no longer has (litd leaves them behind when it
//! fails after registering). Runs on a schedule with litgate's own macaroon; a refusal of
//! that lookup is litgate's configuration to fix, never a caller's fault.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, UNIX_EPOCH},
};

use super::super::client::Autopilot;
use crate::{
    clock::SharedClock,
    error::Error,
    methods::LIST_AUTOPILOT_SESSIONS,
    proto::{autopilotserverrpc::RevokeSessionRequest, litrpc::SessionState},
    store::Store,
    upstream::{litd::CallError, Upstream},
};

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
    /// Where orphans are revoked.
    pub(crate) autopilot: Autopilot,
    /// litd, asked for its autopilot sessions.
    pub(crate) upstream: Upstream,
    /// The ledger.
    pub(crate) store: Store,
    /// Now.
    pub(crate) clock: SharedClock,
    /// litgate's own credential for `ListAutopilotSessions`.
    pub(crate) macaroon: http::HeaderValue,
    /// Registrations younger than this are left alone (their AddAutopilotSession may still be
    /// running).
    pub(crate) grace: Duration,
}

impl Reconciler {
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
                    let session = entry.session_id.clone();
                    self.store
                        .off_worker(move |s| s.ledger_put(&key, &entry))
                        .await?;
                    report.revoked += 1;
                    tracing::info!(%session, "revoked an orphaned registration at the Autopilot server");
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
