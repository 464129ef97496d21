//! The router's grpc-websockets terminator: a WebSocket carrying a call to a method litgate
//! intercepts is answered here (`101`), and the grpc-web call inside it is dispatched exactly as
//! a grpc-web call would be (same policy, same cache), its answer written back inside the
//! WebSocket. The framing is `grpc::websocket`'s; this file only connects it to the stack.

use std::future::Future;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};
use tokio_tungstenite::{
    tungstenite::protocol::{Role, WebSocketConfig},
    WebSocketStream,
};

use crate::{
    body::{self, Request, Response},
    error::Error,
    grpc::{
        reply::error_response,
        status::{self, Deferred},
        websocket::{self, answer, call, HandshakeError},
        Protocol,
    },
    headers::strip_hop_by_hop,
    layers::identity::Caller,
    server::{ConnectInfo, Upgrades},
};

/// Accepts a grpc-websockets call to an intercepted method and serves it as the grpc-web call
/// it carries: answers `101`, and once the connection is upgraded reads the header block and
/// the request (at most `limit` bytes), builds the grpc-web request (POST, same path, the
/// header block's metadata as headers, `ConnectInfo`, `Caller` and `Protocol::GrpcWeb` set as
/// the stack sets them), hands it to `dispatch`, and writes the answer back. Malformed frames
/// and oversized requests are answered with a status in the trailer frame; `dispatch` is not
/// called for them. The connection counts as in flight for the drain ([`Upgrades`]).
pub(super) fn terminate<D, F>(
    mut req: Request,
    limit: usize,
    dispatch: D,
) -> Result<Response, Error>
where
    D: FnOnce(Request) -> F + Send + 'static,
    F: Future<Output = Result<Response, Error>> + Send + 'static,
{
    let answer = websocket::accept(req.method(), req.headers()).map_err(|e| match e {
        HandshakeError::Origin => Error::client(
            tonic::Code::PermissionDenied,
            format!("grpc-websockets: {e}"),
        ),
        e => Error::invalid(format!("grpc-websockets: {e}")),
    })?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let path = req.uri().path().to_owned();
    let info = req.extensions().get::<ConnectInfo>().copied();
    // The caller's status arrives inside the WebSocket: report that one, not the `101`.
    let report = req.extensions().get::<Deferred>().and_then(|d| d.claim());
    Upgrades::of(&req).spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "grpc-websockets: the upgrade did not complete");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(limit + 1))
            .max_frame_size(Some(limit + 1));
        let mut ws = WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            Some(config),
        )
        .await;
        let answer = match call::read_call(&mut ws, limit).await {
            Ok(None) => return,
            Ok(Some((headers, body))) => match inner_request(&path, headers, body, info) {
                Ok(inner) => dispatch(inner).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(Error::client(e.code(), e.to_string())),
        };
        let resp = answer.unwrap_or_else(|e| {
            e.log("grpc-websockets call refused");
            error_response(Protocol::GrpcWeb, &e)
        });
        let resp = match report {
            Some(report) => status::watch(Protocol::GrpcWeb, resp, move |o| report.report(o)),
            None => resp,
        };
        if let Err(e) = answer::write_response(&mut ws, resp).await {
            tracing::debug!(error = %e, "grpc-websockets: the client went away");
            return;
        }
        answer::close(&mut ws).await;
    });
    Ok(answer.map(|()| body::empty()))
}

/// The grpc-web request a grpc-websockets call carries, as the stack would have seen it.
fn inner_request(
    path: &str,
    mut headers: HeaderMap,
    body: Bytes,
    info: Option<ConnectInfo>,
) -> Result<Request, Error> {
    if Protocol::detect(&headers, path) != Protocol::GrpcWeb {
        return Err(Error::invalid(
            "grpc-websockets: the header block's content-type must be application/grpc-web+proto",
        ));
    }
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut req = http::Request::post(path)
        .body(body::full(body))
        .map_err(|_| Error::invalid("grpc-websockets: the request path is not a valid URI"))?;
    let caller = Caller::from_parts(&headers, info.as_ref());
    *req.headers_mut() = headers;
    let ext = req.extensions_mut();
    ext.insert(Protocol::GrpcWeb);
    ext.insert(caller);
    if let Some(info) = info {
        ext.insert(info);
    }
    Ok(req)
}
