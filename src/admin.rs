//! The admin listener (`[admin]`, plaintext HTTP/1.1, loopback by default): `/live` (the
//! process answers), `/ready` (the store is usable and litd answered a TLS handshake),
//! `/metrics` (Prometheus text). Never on the public face; answers carry no secrets.

use std::{convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use http::{header, Method, StatusCode};
use serde::Deserialize;

use crate::{
    body::{self, Request, Response},
    upstream::Upstream,
};

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address.
    pub addr: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9445)),
        }
    }
}

/// One readiness check: a name and an async probe returning `Err(reason)` when not ready.
pub type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Admin {
    registry: crate::layers::metrics::SharedRegistry,
    checks: Arc<Vec<(&'static str, Check)>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// Admin endpoints over `registry` with readiness `checks`, run in order on each `/ready`.
    pub fn new(
        registry: crate::layers::metrics::SharedRegistry,
        checks: Vec<(&'static str, Check)>,
    ) -> Self {
        Admin {
            registry,
            checks: Arc::new(checks),
        }
    }

    /// The readiness check for litd: a fresh TLS handshake (not a pooled connection).
    pub fn upstream_check(upstream: Upstream) -> Check {
        Arc::new(move || {
            let u = upstream.clone();
            Box::pin(async move { u.probe().await.map_err(|e| e.to_string()) })
        })
    }

    /// Answers one admin request.
    pub async fn handle(&self, req: Request) -> Result<Response, Infallible> {
        if req.method() != Method::GET {
            return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into()));
        }
        Ok(match req.uri().path() {
            "/live" => text(StatusCode::OK, "ok\n".into()),
            "/ready" => {
                let mut report = String::new();
                let mut ready = true;
                for (name, check) in self.checks.iter() {
                    match check().await {
                        Ok(()) => report.push_str(&format!("{name}: ok\n")),
                        Err(reason) => {
                            ready = false;
                            report.push_str(&format!("{name}: {reason}\n"));
                        }
                    }
                }
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                text(status, report)
            }
            "/metrics" => {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
                    Ok(()) => {
                        let mut r = Response::new(body::full(out));
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        r
                    }
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("encoding metrics failed: {e}\n"),
                    ),
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /live, /ready, /metrics\n".into(),
            ),
        })
    }
}

fn text(status: StatusCode, s: String) -> Response {
    let mut r = Response::new(body::full(s));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
