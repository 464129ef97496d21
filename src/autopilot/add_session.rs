//! The AddAutopilotSession handler on the public face: decode the request in whatever
//! protocol it came (gRPC, grpc-web, grpc-web-text, REST), run the policy, write its decision
//! into the request without losing what litgate does not understand, record the approval (in
//! memory: the relay reads it from there, the store gets it in the background; with the relay
//! off nothing would ever read it, so nothing is recorded), and forward to litd with the
//! caller's own metadata (litd still authenticates the caller).
//! A refused request is answered here: litd is never contacted and nothing is stored.

use std::{sync::Arc, time::UNIX_EPOCH};

use http::{header, HeaderValue};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use prost::Message;

use super::{
    approvals::Approvals,
    auth::{AuthGate, Verdict},
    catalogue::Catalogue,
    policy::{LinkedSession, LivePolicy, Policy, Refusal},
    rewrite::{self, RewriteError},
};
use crate::{
    body::{self, Request, Response},
    clock::SharedClock,
    error::Error,
    grpc::{
        codec::{self, Unary},
        Protocol,
    },
    proto::litrpc::AddAutopilotSessionRequest,
    store::Approval,
    telemetry::metrics::registered,
    upstream::{litd::CallError, Upstream},
};

/// Labels of a policy outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
    reason: &'static str,
}

/// The handler. One per process, shared by every connection.
#[derive(Debug)]
pub struct AddSessionHandler {
    policy: LivePolicy,
    catalogue: Arc<Catalogue>,
    auth: AuthGate,
    upstream: Upstream,
    /// Where approvals go for the relay; `None` with the relay off.
    approvals: Option<Approvals>,
    clock: SharedClock,
    max_message_bytes: usize,
    outcomes: Family<OutcomeLabels, Counter>,
    /// The two outcomes every call that is not refused counts, looked up once rather than
    /// hashed into `outcomes` on each call (same counters: a clone shares the value).
    approved: Counter,
    unauthenticated: Counter,
}

impl AddSessionHandler {
    /// Builds the handler and registers its metrics. `approvals`: the relay's index, `None`
    /// when the relay is off (litd then registers with the Autopilot server directly and no
    /// approval would ever be looked up).
    pub fn new(
        policy: Policy,
        catalogue: Arc<Catalogue>,
        upstream: Upstream,
        approvals: Option<Approvals>,
        clock: SharedClock,
        max_message_bytes: usize,
        registry: &mut Registry,
    ) -> Self {
        let outcomes: Family<OutcomeLabels, Counter> = registered(
            registry,
            "sessions",
            "AddAutopilotSession requests approved or refused by litgate's policy, by reason",
        );
        let outcome = |outcome, reason| {
            outcomes
                .get_or_create(&OutcomeLabels { outcome, reason })
                .clone()
        };
        let approved = outcome("approved", "ok");
        let unauthenticated = outcome("unauthenticated", "litd_answered");
        AddSessionHandler {
            policy: LivePolicy::new(policy),
            catalogue,
            auth: AuthGate::new(upstream.clone(), clock.clone(), registry),
            upstream,
            approvals,
            clock,
            max_message_bytes,
            outcomes,
            approved,
            unauthenticated,
        }
    }

    /// The policy in force, for a reload to swap.
    pub(crate) fn live_policy(&self) -> LivePolicy {
        self.policy.clone()
    }

    /// Handles one AddAutopilotSession request in any protocol.
    pub async fn handle(&self, req: Request) -> Result<Response, Error> {
        let protocol = Protocol::of(&req);
        match self.decide_and_rewrite(protocol, req).await {
            Ok(Decided::LitdAnswered(resp)) => {
                self.unauthenticated.inc();
                Ok(resp)
            }
            Ok(Decided::Forward(forward)) => {
                self.approved.inc();
                self.upstream.forward(forward).await
            }
            Err(refusal) => {
                self.outcomes
                    .get_or_create(&OutcomeLabels {
                        outcome: "refused",
                        reason: refusal.reason,
                    })
                    .inc();
                Err(refusal.error)
            }
        }
    }

    async fn decide_and_rewrite(
        &self,
        protocol: Protocol,
        req: Request,
    ) -> Result<Decided, Refusal> {
        let (mut parts, body) = req.into_parts();
        let raw = codec::read_body(body, self.max_message_bytes)
            .await
            .map_err(|e| as_refusal("bad_body", e))?;
        let unary =
            codec::decode_unary(protocol, &raw).map_err(|e| as_refusal("bad_encoding", e))?;
        let msg = match &unary {
            Unary::Proto(b) => AddAutopilotSessionRequest::decode(b.clone()).map_err(|e| {
                as_refusal(
                    "malformed",
                    Error::invalid(format!("malformed AddAutopilotSessionRequest: {e}")),
                )
            })?,
            Unary::Json(obj) => serde_json::from_value(serde_json::Value::Object(obj.clone()))
                .map_err(|e| {
                    as_refusal(
                        "malformed",
                        Error::invalid(format!("malformed AddAutopilotSessionRequest JSON: {e}")),
                    )
                })?,
        };

        // litd's own answer for a caller it does not authenticate; the policy only after.
        match self
            .auth
            .verdict(protocol, &parts)
            .await
            .map_err(|e| as_refusal("auth_probe", e))?
        {
            Verdict::Authenticated => {}
            Verdict::Answered(resp) => return Ok(Decided::LitdAnswered(resp)),
        }
        // One policy for the whole call, even if a reload swaps it meanwhile.
        let policy = self.policy.current();
        policy.check_request(&msg, self.clock.now())?;
        let features = self
            .catalogue
            .get()
            .await
            .map_err(|e| as_refusal("catalogue_unavailable", e))?;
        let linked = if msg.linked_group_id.is_empty() {
            None
        } else {
            Some(
                self.linked_session(&parts.headers, &msg.linked_group_id)
                    .await?,
            )
        };
        let decision = policy.decide(&msg, &features, linked.as_ref())?;

        let rewritten = match unary {
            Unary::Proto(b) => rewrite::proto(&b, &msg, &decision).map(|r| r.map(Unary::Proto)),
            Unary::Json(obj) => rewrite::json(obj, &msg, &decision).map(|r| r.map(Unary::Json)),
        }
        .map_err(|e| match e {
            RewriteError::Malformed(e) => as_refusal(
                "malformed",
                Error::invalid(format!("malformed AddAutopilotSessionRequest: {e}")),
            ),
            e @ RewriteError::Json(_) => as_refusal(
                "internal",
                Error::internal_from("rewriting the request failed", e),
            ),
        })?;
        if let Some(approvals) = &self.approvals {
            approvals.record(Approval {
                features: decision.features.clone(),
                privacy_flags: decision.approved_flags,
                privacy: decision.privacy,
                linked_group_id: hex::encode(&msg.linked_group_id),
                approved_at: self
                    .clock
                    .now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            });
        }

        let body = match rewritten {
            // Nothing to change: forward the caller's bytes as they came.
            None => raw,
            Some(m) => codec::encode_unary(protocol, &m),
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        Ok(Decided::Forward(Request::from_parts(
            parts,
            body::full(body),
        )))
    }

    /// Asks litd, with the caller's credential, about the session a request links to.
    async fn linked_session(
        &self,
        headers: &http::HeaderMap,
        group_id: &[u8],
    ) -> Result<LinkedSession, Refusal> {
        let gid = hex::encode(group_id);
        let mut metadata = http::HeaderMap::new();
        for (from, to) in [
            ("macaroon", "macaroon"),
            ("grpc-metadata-macaroon", "macaroon"),
            ("authorization", "authorization"),
        ] {
            if let Some(v) = headers.get(from) {
                metadata.insert(to, v.clone());
            }
        }
        let list = self
            .upstream
            .list_autopilot_sessions(metadata)
            .await
            .map_err(|e| match e {
                // The caller's own credential: litd's refusal is the caller's answer.
                CallError::Refused(s) => as_refusal(
                    "linked_lookup_failed",
                    Error::client(
                        s.code(),
                        format!(
                            "linked_group_id: litd refused the lookup of session {gid}: {}",
                            s.message()
                        ),
                    ),
                ),
                CallError::Unreachable(e) => as_refusal("upstream", e),
            })?;
        let session = list
            .sessions
            .into_iter()
            .find(|s| s.id == group_id)
            .ok_or_else(|| Refusal {
                reason: "linked_not_found",
                error: Error::refused(format!(
                    "linked_group_id: litd has no autopilot session {gid}"
                )),
            })?;
        Ok(LinkedSession {
            first_in_group: session.group_id == session.id,
            privacy_flags: session.privacy_flags,
        })
    }
}

/// What the handler does with a request it decided on (refusals aside).
enum Decided {
    /// Approved: forward this (possibly rewritten) request.
    Forward(Request),
    /// litd did not authenticate the caller: its answer, as is.
    LitdAnswered(Response),
}

fn as_refusal(reason: &'static str, error: Error) -> Refusal {
    Refusal { reason, error }
}
