//! Authentication before policy, for AddAutopilotSession on the public face. litd
//! authenticates every call before its handler runs; litgate's policy runs before litd is
//! touched. Without this module a caller with no credential (or a forged one) would get
//! litgate's policy refusal, learning the operator's caps, deny list and the catalogue, and
//! would never see litd's own `UNAUTHENTICATED`/`expected 1 macaroon` answer that clients act
//! on (the Terminal UI logs in again).
//!
//! The rule: a caller learns policy details only once litd has authenticated its credential for
//! this method; everyone else gets exactly litd's answer; and a request the policy refuses never
//! reaches litd in a form that can write anything.
//!
//! How: before the policy runs for a credential litd has not vouched for recently, litgate sends
//! litd a **probe**: the caller's own request head (credential, protocol, path) with an
//! AddAutopilotSession that has no features. litd checks the macaroon (and its
//! `autopilot:write` permission) first, then refuses the empty request with `must include at
//! least one feature`, the first step of its validation, before it writes anything. That answer
//! means "authenticated": the verdict is remembered for the credential (by digest, bounded,
//! short-lived) and the policy runs. Any other answer (an authentication error, a permission
//! error, anything unexpected) is returned to the caller as litd gave it, byte for byte, and the
//! policy never runs: fail closed. The probe costs one extra call to litd per credential per
//! [`VERDICT_TTL`]; requests without any credential are probed every time (litd answers them
//! at once).
//!
//! It never stores or logs a credential: verdicts are keyed by a SHA-256 digest.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{header, HeaderValue};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use sha2::{Digest, Sha256};

use crate::{
    body::{self, Response},
    clock::SharedClock,
    error::Error,
    grpc::{
        codec,
        status::{status_of, Answer},
        Protocol,
    },
    layers::identity::Caller,
    telemetry::metrics::registered,
    upstream::Upstream,
};

/// litd's answer to an AddAutopilotSession without features, after authentication.
pub(crate) const AUTHENTICATED_ANSWER: &str = "must include at least one feature";
/// How long litd's verdict on a credential is trusted.
pub const VERDICT_TTL: Duration = Duration::from_secs(60);
/// Most credentials remembered; the oldest verdict is forgotten first.
pub(crate) const MAX_VERDICTS: usize = 4096;
/// Largest probe answer read (litd's refusals are a few hundred bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// What the probe found.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// litd authenticated the credential for AddAutopilotSession: the policy may run.
    Authenticated,
    /// litd did not: its answer, to give the caller as is.
    Answered(Response),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    verdict: &'static str,
}

/// Remembers litd's verdicts and probes for new credentials.
#[derive(Debug)]
pub(crate) struct AuthGate {
    upstream: Upstream,
    clock: SharedClock,
    known: Mutex<Known>,
    probes: Family<ProbeLabels, Counter>,
}

#[derive(Debug, Default)]
struct Known {
    until: HashMap<[u8; 32], SystemTime>,
    order: VecDeque<[u8; 32]>,
}

impl AuthGate {
    /// A gate probing `upstream`; registers `litgate_autopilot_auth_probes_total{verdict}`.
    pub(crate) fn new(upstream: Upstream, clock: SharedClock, registry: &mut Registry) -> Self {
        let probes: Family<ProbeLabels, Counter> = registered(
            registry,
            "auth_probes",
            "Probes asking litd whether a credential may call AddAutopilotSession, by verdict",
        );
        AuthGate {
            upstream,
            clock,
            known: Mutex::new(Known::default()),
            probes,
        }
    }

    /// litd's verdict on the caller of the request whose head is `parts`, from memory or from a
    /// probe.
    pub(crate) async fn verdict(
        &self,
        protocol: Protocol,
        parts: &http::request::Parts,
    ) -> Result<Verdict, Error> {
        let credential = parts
            .extensions
            .get::<Caller>()
            .and_then(|c| c.credential.as_ref());
        let key = credential.map(|c| digest(&c.raw));
        let now = self.clock.now();
        if let Some(k) = &key {
            if self.remembered(k, now) {
                return Ok(Verdict::Authenticated);
            }
        }
        let answer = self.probe(protocol, parts).await?;
        let authenticated = status_of(protocol, &answer)
            .is_some_and(|s| s.code() != tonic::Code::Ok && s.message() == AUTHENTICATED_ANSWER);
        let label = if authenticated {
            "authenticated"
        } else if status_of(protocol, &answer).is_some_and(|s| s.code() == tonic::Code::Ok) {
            // litd accepted an AddAutopilotSession without features: not the litd this was
            // written for. Refuse rather than guess.
            "unexpected"
        } else {
            "refused"
        };
        self.probes
            .get_or_create(&ProbeLabels { verdict: label })
            .inc();
        match (authenticated, key) {
            (true, Some(k)) => {
                let until = credential
                    .and_then(|c| c.time_before())
                    .map_or(now + VERDICT_TTL, |t| t.min(now + VERDICT_TTL));
                self.remember(k, until);
                Ok(Verdict::Authenticated)
            }
            // Authenticated without a credential (a litd that does not check): probe each time.
            (true, None) => Ok(Verdict::Authenticated),
            (false, _) if label == "unexpected" => Err(Error::internal(
                "litd accepted an AddAutopilotSession without features; litgate refuses to decide on an answer it does not understand",
            )),
            (false, _) => Ok(Verdict::Answered(answer.into_response())),
        }
    }

    fn remembered(&self, key: &[u8; 32], now: SystemTime) -> bool {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        match known.until.get(key) {
            Some(until) if *until > now => true,
            Some(_) => {
                known.until.remove(key);
                false
            }
            None => false,
        }
    }

    fn remember(&self, key: [u8; 32], until: SystemTime) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.until.insert(key, until).is_none() {
            known.order.push_back(key);
        }
        while known.until.len() > MAX_VERDICTS {
            let Some(old) = known.order.pop_front() else {
                break;
            };
            known.until.remove(&old);
        }
        // Keys forgotten on expiry are still queued; drop those so the queue stays bounded.
        if known.order.len() > 2 * MAX_VERDICTS {
            let Known { until, order } = &mut *known;
            order.retain(|k| until.contains_key(k));
        }
    }

    /// Sends litd the caller's head with an AddAutopilotSession without features, in the
    /// caller's protocol, and reads litd's answer.
    async fn probe(
        &self,
        protocol: Protocol,
        parts: &http::request::Parts,
    ) -> Result<Answer, Error> {
        let body = match protocol {
            Protocol::Rest => Bytes::from_static(b"{}"),
            // The empty message: no features, nothing else.
            _ => codec::encode_unary(protocol, &codec::Unary::Proto(Bytes::new())),
        };
        let mut req = http::Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone())
            .version(parts.version)
            .body(body::full(body.clone()))
            .map_err(|e| Error::internal_from("building the authentication probe failed", e))?;
        *req.headers_mut() = parts.headers.clone();
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let resp = self.upstream.forward(req).await?;
        let (head, body) = resp.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_ANSWER);
        Answer::read(Response::from_parts(head, body::boxed(limited)))
            .await
            .map_err(|e| Error::Upstream {
                addr: self.upstream.addr().to_string(),
                reason: format!("the answer to the authentication probe broke off: {e}"),
            })
    }
}

fn digest(raw: &[u8]) -> [u8; 32] {
    Sha256::digest(raw).into()
}
