//! The access log (`[log] access = true`): one line per call at `info` under the target
//! `litgate::access`, written when the call ends, with what an operator greps for: the HTTP
//! method and path (never the query), protocol, route, gRPC and HTTP status, outcome, latency
//! to the end of the answer, peer, and who called. The metrics layer, which sees each call's
//! outcome exactly once, writes it. It never records a credential: the caller is a short
//! digest of its macaroon's identifier (the same for attenuated copies, and not the secret
//! part of a macaroon), `basic` for the UI password, `unparsed` for a credential that is not
//! a macaroon, `-` for none.

use std::{net::SocketAddr, time::Instant};

use sha2::{Digest, Sha256};

use super::{identity::Caller, metrics::OutcomeLabels};
use crate::{body::Request, server::ConnectInfo, telemetry::ACCESS_TARGET};

/// What the access line needs from the request, read before it goes in.
pub(crate) struct Access {
    method: http::Method,
    path: String,
    peer: Option<SocketAddr>,
    caller: String,
    start: Instant,
}

impl Access {
    /// The request's part of its line, or `None` when the access log is off (then nothing is
    /// read or hashed).
    pub(crate) fn begin(req: &Request) -> Option<Access> {
        if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            return None;
        }
        let caller = Caller::from_parts(req.headers(), req.extensions().get::<ConnectInfo>());
        Some(Access {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            peer: caller.peer,
            caller: caller_id(&caller),
            start: Instant::now(),
        })
    }

    /// Writes the line for a call that ended with `labels`.
    pub(crate) fn finish(self, labels: &OutcomeLabels) {
        tracing::info!(
            target: ACCESS_TARGET,
            method = %self.method,
            path = %self.path,
            protocol = labels.protocol,
            route = labels.route,
            grpc_status = labels.grpc_status,
            http_status = labels.http_status,
            outcome = labels.outcome,
            latency_us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX),
            peer = self.peer.map(tracing::field::display),
            caller = %self.caller,
            "call"
        );
    }
}

/// The caller's name in the access log: the first 12 hex digits of the SHA-256 of its
/// macaroon's identifier.
fn caller_id(caller: &Caller) -> String {
    match &caller.credential {
        None => "-".into(),
        Some(c) => match c.identifier() {
            Some(id) => hex::encode(&Sha256::digest(id)[..6]),
            None if c.kind == super::identity::CredentialKind::Basic => "basic".into(),
            None => "unparsed".into(),
        },
    }
}
