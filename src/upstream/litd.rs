//! Typed calls to litd: the generated `litrpc` clients, run over the pooled upstream connection
//! (the same client, pinning and connection the passthrough uses). litgate makes these calls on
//! its own behalf (reconciliation, with `[upstream] macaroon`) or with a caller's credential
//! (the linked-session lookup); each caller decides whose fault litd's refusal is, so this
//! module tells a refusal ([`CallError::Refused`], litd answered with a status) from a failure
//! to reach litd ([`CallError::Unreachable`]).

use http::HeaderMap;
use tonic::metadata::MetadataMap;
use tower::ServiceExt;

use super::Upstream;
use crate::{
    body::{Body, Request},
    error::Error,
    proto::litrpc::{
        autopilot_client::AutopilotClient, ListAutopilotSessionsRequest,
        ListAutopilotSessionsResponse,
    },
};

/// Why a typed call to litd did not return its answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// litd answered with a status other than OK (or an answer that does not decode).
    #[error("litd answered {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    /// litd could not be reached, or the connection broke.
    #[error(transparent)]
    Unreachable(Error),
}

/// The upstream as a tower service for tonic's generated clients: their request body boxed into
/// litgate's.
type Channel = tower::util::MapRequest<Upstream, fn(http::Request<tonic::body::Body>) -> Request>;

fn boxed_request(req: http::Request<tonic::body::Body>) -> Request {
    req.map(Body::new)
}

impl Upstream {
    fn channel(&self) -> Channel {
        self.clone()
            .map_request(boxed_request as fn(http::Request<tonic::body::Body>) -> Request)
    }

    /// `litrpc.Autopilot/ListAutopilotSessions`, carrying `metadata` (a credential).
    pub async fn list_autopilot_sessions(
        &self,
        metadata: HeaderMap,
    ) -> Result<ListAutopilotSessionsResponse, CallError> {
        let req = tonic::Request::from_parts(
            MetadataMap::from_headers(metadata),
            Default::default(),
            ListAutopilotSessionsRequest {},
        );
        AutopilotClient::new(self.channel())
            .list_autopilot_sessions(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.call_error(s))
    }

    /// A failed call's status: litd's answer, unless the status only wraps the transport
    /// error that kept the call from reaching litd (tonic keeps that error as its source).
    fn call_error(&self, status: tonic::Status) -> CallError {
        match std::error::Error::source(&status) {
            None => CallError::Refused(status),
            Some(source) => CallError::Unreachable(match source.downcast_ref::<Error>() {
                Some(Error::Upstream { reason, .. }) => Error::Upstream {
                    addr: self.addr().to_string(),
                    reason: reason.clone(),
                },
                _ => Error::Upstream {
                    addr: self.addr().to_string(),
                    reason: crate::error::chain(source),
                },
            }),
        }
    }
}
