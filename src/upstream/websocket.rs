//! WebSocket tunnels to litd. A WebSocket is an HTTP/1.1 upgrade, which the pooled HTTP/2
//! connection cannot carry, so each upgrade gets an HTTP/1.1 connection of its own (litd's
//! pinned certificate and server name, ALPN `http/1.1`): the upgrade request goes to litd, and
//! when litd switches protocols, bytes are copied both ways until either side closes; frames,
//! close codes and pings pass through untouched. Any other answer from litd goes to the client
//! as it came. The router decides which upgrades may tunnel; this module never looks inside one.

use std::future::Future;

use http::{header, HeaderValue, StatusCode};
use hyper_util::rt::TokioIo;

use super::{describe, Upstream};
use crate::{
    body::{boxed, Request, Response},
    error::Error,
    headers::strip_hop_by_hop,
    server::Upgrades,
};

impl Upstream {
    /// Carries one WebSocket upgrade to litd and, if litd accepts it, the connection after it.
    /// The request keeps the client's `Host` (litd's grpc-websockets handshake compares it with
    /// `Origin`), its `Upgrade` and the `Sec-WebSocket-*` headers; other hop-by-hop headers go.
    /// Connecting and litd's answer together take at most `upstream.connect_timeout`; litd
    /// unreachable is [`Error::Upstream`]. The tunnel runs under the listener's [`Upgrades`].
    pub fn tunnel(
        &self,
        mut req: Request,
    ) -> impl Future<Output = Result<Response, Error>> + Send + 'static {
        let upstream = self.clone();
        let client_upgrade = hyper::upgrade::on(&mut req);
        let upgrades = Upgrades::of(&req);
        async move {
            let fail = |reason: String| {
                upstream.inner.metrics.errors.inc();
                Error::Upstream {
                    addr: upstream.inner.label.to_string(),
                    reason,
                }
            };
            let (mut parts, _) = req.into_parts();
            // The upgrade's own headers survive the hop-by-hop strip, even if `Connection`
            // names them.
            let own: Vec<_> = parts
                .headers
                .iter()
                .filter(|(name, _)| {
                    *name == header::UPGRADE || name.as_str().starts_with("sec-websocket-")
                })
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            strip_hop_by_hop(&mut parts.headers);
            for (name, _) in &own {
                parts.headers.remove(name);
            }
            for (name, value) in own {
                parts.headers.append(name, value);
            }
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            let mut forward = http::Request::new(crate::body::empty());
            *forward.method_mut() = parts.method;
            *forward.uri_mut() = parts
                .uri
                .path_and_query()
                .map(|pq| pq.as_str())
                .unwrap_or("/")
                .parse()
                .map_err(|_| Error::invalid("the request path is not a valid URI"))?;
            *forward.headers_mut() = parts.headers;

            let exchange = async {
                let io = upstream
                    .dial(upstream.inner.h1_tls.as_ref())
                    .await
                    .inspect_err(|_| {
                        upstream.inner.metrics.errors.inc();
                    })?;
                upstream.inner.metrics.connections.inc();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                    .await
                    .map_err(|e| fail(describe(&e)))?;
                // Ends once the connection is handed to the upgrade, or litd's answer is read.
                tokio::spawn(async move {
                    if let Err(e) = conn.with_upgrades().await {
                        tracing::debug!(error = %e, "websocket tunnel: litd connection ended");
                    }
                });
                send.send_request(forward)
                    .await
                    .map_err(|e| fail(describe(&e)))
            };
            let timeout = upstream.inner.connect_timeout;
            let mut resp = tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| {
                    fail(format!(
                        "no WebSocket answer within {timeout:?} (upstream.connect_timeout)"
                    ))
                })??;

            if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                return Ok(Response::from_parts(parts, boxed(body)));
            }
            let litd_upgrade = hyper::upgrade::on(&mut resp);
            upgrades.spawn(async move {
                let (client, litd) = match tokio::try_join!(client_upgrade, litd_upgrade) {
                    Ok(both) => both,
                    Err(e) => {
                        tracing::debug!(error = %e, "websocket tunnel: upgrade failed");
                        return;
                    }
                };
                let (mut client, mut litd) = (TokioIo::new(client), TokioIo::new(litd));
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut litd).await {
                    tracing::debug!(error = %e, "websocket tunnel ended with an error");
                    // Best effort: end the client's TLS cleanly even when litd's side broke.
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut client).await;
                }
            });
            // litd's switch, headers as litd sent them (Upgrade, Connection, Sec-WebSocket-*).
            let (parts, _) = resp.into_parts();
            Ok(Response::from_parts(parts, crate::body::empty()))
        }
    }
}
