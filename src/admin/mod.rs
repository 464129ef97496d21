//! The admin listener (`[admin]`, plaintext HTTP/1.1, loopback by default): `/live` (the
//! process answers), `/ready` (the store takes writes and litd answered a TLS handshake),
//! `/metrics` (Prometheus text), `/registrations` (the relay's ledger as JSON: public keys and
//! metadata only, with what each registration let the Autopilot server see in clear and the
//! paths, never the values, of the node identifiers in its feature configs). Never on the public face; answers carry no secrets.

pub(crate) mod config;
mod store_check;

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc};

use http::{header, Method, StatusCode};

use crate::{
    body::{self, Request, Response},
    store::Store,
    upstream::Upstream,
};

/// One readiness check: a name and an async probe returning `Err(reason)` when not ready.
pub(crate) type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What the admin endpoints read.
#[derive(Clone)]
pub(crate) struct Admin {
    registry: Arc<prometheus_client::registry::Registry>,
    checks: Arc<Vec<(&'static str, Check)>>,
    notes: Arc<Vec<String>>,
    store: Option<Store>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// Admin endpoints over `registry` with readiness `checks`, run in order on each `/ready`.
    pub(crate) fn new(
        registry: Arc<prometheus_client::registry::Registry>,
        checks: Vec<(&'static str, Check)>,
    ) -> Self {
        Admin {
            registry,
            checks: Arc::new(checks),
            notes: Arc::new(Vec::new()),
            store: None,
        }
    }

    /// Adds lines shown in `/ready` that do not affect readiness (e.g. a feature that is off).
    pub(crate) fn with_notes(mut self, notes: Vec<String>) -> Self {
        self.notes = Arc::new(notes);
        self
    }

    /// Serves the registration ledger at `/registrations`.
    pub(crate) fn with_registrations(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The readiness check for the store: it takes writes (a small write and flush, at most
    /// once per few seconds, on the blocking pool; times on `clock`).
    pub(crate) fn store_check(store: Store, clock: crate::clock::SharedClock) -> Check {
        store_check::check(store, clock)
    }

    /// The readiness check for litd: a fresh TLS handshake (not a pooled connection).
    pub(crate) fn upstream_check(upstream: Upstream) -> Check {
        Arc::new(move || {
            let u = upstream.clone();
            Box::pin(async move { u.probe().await.map_err(|e| e.to_string()) })
        })
    }

    /// Answers one admin request.
    pub(crate) async fn handle(&self, req: Request) -> Result<Response, Infallible> {
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
                for note in self.notes.iter() {
                    report.push_str(note);
                    report.push('\n');
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
            "/registrations" => match &self.store {
                None => text(
                    StatusCode::NOT_FOUND,
                    "the relay is off: no registrations are kept\n".into(),
                ),
                // A full scan of the ledger: on the blocking pool, never on a runtime thread.
                Some(store) => match store.off_worker(|s| s.ledger()).await {
                    Ok(entries) => {
                        let json = serde_json::json!({ "registrations": entries });
                        let mut r = Response::new(body::full(json.to_string()));
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static("application/json"),
                        );
                        r
                    }
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                },
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /live, /ready, /metrics, /registrations\n".into(),
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

/// Fetches `/registrations` from a running litgate's admin listener and renders it as a table
/// (`litgate registrations --admin ADDR`).
pub async fn fetch_registrations(admin: &str) -> Result<String, String> {
    let url = format!("http://{admin}/registrations");
    let resp = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("cannot reach litgate's admin listener at {admin}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}: {}", text.trim()));
    }
    #[derive(serde::Deserialize)]
    struct Ledger {
        registrations: Vec<crate::store::LedgerEntry>,
    }
    let ledger: Ledger =
        serde_json::from_str(&text).map_err(|e| format!("{url}: unexpected answer: {e}"))?;
    Ok(render_table(&ledger.registrations))
}

/// The ledger as a fixed-width text table.
pub(crate) fn render_table(entries: &[crate::store::LedgerEntry]) -> String {
    let fmt_time = |t: Option<u64>| {
        t.map(|s| {
            crate::macaroon::format_rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
            )
        })
        .unwrap_or_else(|| "-".into())
    };
    let mut rows = vec![[
        "SESSION".to_string(),
        "GROUP".into(),
        "FEATURES".into(),
        "FLAGS".into(),
        "REGISTERED".into(),
        "LAST ACTIVATION".into(),
        "REVOKED".into(),
        "SERVER SEES IN CLEAR".into(),
    ]];
    for e in entries {
        let flags = if e.privacy_flags == 0 {
            "none".to_string()
        } else {
            crate::autopilot::privacy::flags::text(e.privacy_flags)
        };
        let revoked = match (&e.revoked_at, &e.revoked_by) {
            (Some(t), Some(by)) => format!("{} by {by}", fmt_time(Some(*t))),
            (Some(t), None) => fmt_time(Some(*t)),
            _ => "-".into(),
        };
        let activation = match (&e.last_activation, &e.last_activation_outcome) {
            (Some(t), Some(o)) => format!("{} {o}", fmt_time(Some(*t))),
            _ => "-".into(),
        };
        rows.push([
            e.session_id.clone(),
            e.group_id.clone(),
            e.features.join(","),
            flags,
            fmt_time(Some(e.registered_at)),
            activation,
            revoked,
            match e.server_sees.join(", ") {
                s if s.is_empty() => "nothing".into(),
                s => s,
            },
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if entries.is_empty() {
        out.push_str("(no registrations)\n");
    }
    let configs: Vec<String> = entries.iter().flat_map(|e| e.config_lines()).collect();
    if !configs.is_empty() {
        out.push_str("\nFEATURE CONFIGS SENT (paths of node identifiers, never their values)\n");
        for line in configs {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}
