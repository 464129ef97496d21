//! Method paths: the one place that knows litd's paths. The gRPC methods litgate intercepts and
//! their REST twins ([`Route`]), the shape of a gRPC path and of a REST path, and the read/write
//! class of every method litd serves ([`class`], for the rate limiter). The router, the
//! metrics, the policy, the relay and the cache import paths from here and never spell one
//! themselves. Pure data and string matching: it imports nothing else from litgate.

mod class;

use http::Method;

pub use class::{classify, grpc_class, is_known, known_in_service, verifies_macaroon, Class};

/// `litrpc.Autopilot/AddAutopilotSession`: autopilot policy.
pub const ADD_AUTOPILOT_SESSION: &str = "/litrpc.Autopilot/AddAutopilotSession";
/// `litrpc.Sessions/ListSessions`: session cache.
pub const LIST_SESSIONS: &str = "/litrpc.Sessions/ListSessions";
/// `litrpc.Autopilot/ListAutopilotSessions`: session cache; litgate's own lookups.
pub const LIST_AUTOPILOT_SESSIONS: &str = "/litrpc.Autopilot/ListAutopilotSessions";
/// `litrpc.Sessions/AddSession`: invalidates the cache.
pub const ADD_SESSION: &str = "/litrpc.Sessions/AddSession";
/// `litrpc.Sessions/RevokeSession`: invalidates the cache.
pub const REVOKE_SESSION: &str = "/litrpc.Sessions/RevokeSession";
/// `litrpc.Autopilot/RevokeAutopilotSession`: invalidates the cache.
pub const REVOKE_AUTOPILOT_SESSION: &str = "/litrpc.Autopilot/RevokeAutopilotSession";

/// REST twin of [`ADD_AUTOPILOT_SESSION`] (POST, body *) and [`LIST_AUTOPILOT_SESSIONS`] (GET).
pub const REST_AUTOPILOT_SESSIONS: &str = "/v1/autopilot/sessions";
/// REST twin of [`LIST_SESSIONS`] (GET) and [`ADD_SESSION`] (POST).
pub const REST_SESSIONS: &str = "/v1/sessions";
/// REST twin of [`REVOKE_AUTOPILOT_SESSION`] (DELETE, then the session's key).
const REST_AUTOPILOT_SESSION_PREFIX: &str = "/v1/autopilot/sessions/";
/// REST twin of [`REVOKE_SESSION`] (DELETE, then the session's key).
const REST_SESSION_PREFIX: &str = "/v1/sessions/";

/// The relay face's methods (`autopilotserverrpc.Autopilot`, which litd calls), by path, with
/// their metric labels.
const RELAY_METHODS: [(&str, &str); 5] = [
    ("/autopilotserverrpc.Autopilot/Terms", "Terms"),
    ("/autopilotserverrpc.Autopilot/ListFeatures", "ListFeatures"),
    (
        "/autopilotserverrpc.Autopilot/RegisterSession",
        "RegisterSession",
    ),
    (
        "/autopilotserverrpc.Autopilot/ActivateSession",
        "ActivateSession",
    ),
    (
        "/autopilotserverrpc.Autopilot/RevokeSession",
        "RevokeSession",
    ),
];

/// The public face's route label of a request: its [`Route`]'s.
pub fn public_route_label(method: &Method, path: &str) -> &'static str {
    Route::classify(method, path).label()
}

/// The relay face's route label of a request: the method it calls, or `unknown`.
pub fn relay_route_label(_method: &Method, path: &str) -> &'static str {
    RELAY_METHODS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or("unknown", |(_, label)| label)
}

/// A route: an intercepted method, or the passthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// AddAutopilotSession (gRPC, grpc-web, `POST /v1/autopilot/sessions`).
    AddAutopilotSession,
    /// ListSessions (`GET /v1/sessions`).
    ListSessions,
    /// ListAutopilotSessions (`GET /v1/autopilot/sessions`).
    ListAutopilotSessions,
    /// AddSession (`POST /v1/sessions`).
    AddSession,
    /// RevokeSession (`DELETE /v1/sessions/{local_public_key}`).
    RevokeSession,
    /// RevokeAutopilotSession (`DELETE /v1/autopilot/sessions/{local_public_key}`).
    RevokeAutopilotSession,
    /// Everything else: forwarded as bytes.
    Passthrough,
}

impl Route {
    /// The intercepted gRPC method at `path`, if it names one.
    pub fn grpc(path: &str) -> Option<Route> {
        match path {
            ADD_AUTOPILOT_SESSION => Some(Route::AddAutopilotSession),
            LIST_SESSIONS => Some(Route::ListSessions),
            LIST_AUTOPILOT_SESSIONS => Some(Route::ListAutopilotSessions),
            ADD_SESSION => Some(Route::AddSession),
            REVOKE_SESSION => Some(Route::RevokeSession),
            REVOKE_AUTOPILOT_SESSION => Some(Route::RevokeAutopilotSession),
            _ => None,
        }
    }

    /// Classifies a request by method and path, for gRPC, grpc-web and REST alike.
    pub fn classify(method: &Method, path: &str) -> Route {
        if let Some(route) = Route::grpc(path) {
            return route;
        }
        // REST twins (grpc-gateway ignores a trailing slash only by redirect; so do we not).
        match (method, path) {
            (&Method::POST, REST_AUTOPILOT_SESSIONS) => Route::AddAutopilotSession,
            (&Method::GET, REST_AUTOPILOT_SESSIONS) => Route::ListAutopilotSessions,
            (&Method::GET, REST_SESSIONS) => Route::ListSessions,
            (&Method::POST, REST_SESSIONS) => Route::AddSession,
            (&Method::DELETE, p) if key_segment(p, REST_AUTOPILOT_SESSION_PREFIX) => {
                Route::RevokeAutopilotSession
            }
            (&Method::DELETE, p) if key_segment(p, REST_SESSION_PREFIX) => Route::RevokeSession,
            _ => Route::Passthrough,
        }
    }

    /// Whether the route writes sessions (its success invalidates the cache).
    pub fn writes_sessions(self) -> bool {
        matches!(
            self,
            Route::AddAutopilotSession
                | Route::AddSession
                | Route::RevokeSession
                | Route::RevokeAutopilotSession
        )
    }

    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Route::AddAutopilotSession => "AddAutopilotSession",
            Route::ListSessions => "ListSessions",
            Route::ListAutopilotSessions => "ListAutopilotSessions",
            Route::AddSession => "AddSession",
            Route::RevokeSession => "RevokeSession",
            Route::RevokeAutopilotSession => "RevokeAutopilotSession",
            Route::Passthrough => "passthrough",
        }
    }
}

fn key_segment(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|k| !k.is_empty() && !k.contains('/'))
}

/// litd's REST test: a path matching `^/v\d/`.
pub fn is_rest_path(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= 4 && b[0] == b'/' && b[1] == b'v' && b[2].is_ascii_digit() && {
        let digits = b[2..].iter().take_while(|c| c.is_ascii_digit()).count();
        b.get(2 + digits) == Some(&b'/')
    }
}

/// `/pkg.Service/Method`: two non-empty segments, the first with a dot.
pub fn is_grpc_shaped(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    match rest.split_once('/') {
        Some((svc, m)) => svc.contains('.') && !m.is_empty() && !m.contains('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intercepted_methods_and_their_rest_twins() {
        let cases = [
            (
                Method::POST,
                ADD_AUTOPILOT_SESSION,
                Route::AddAutopilotSession,
            ),
            (
                Method::POST,
                "/v1/autopilot/sessions",
                Route::AddAutopilotSession,
            ),
            (Method::POST, LIST_SESSIONS, Route::ListSessions),
            (Method::GET, "/v1/sessions", Route::ListSessions),
            (
                Method::GET,
                "/v1/autopilot/sessions",
                Route::ListAutopilotSessions,
            ),
            (Method::POST, "/v1/sessions", Route::AddSession),
            (Method::DELETE, "/v1/sessions/AqE", Route::RevokeSession),
            (
                Method::DELETE,
                "/v1/autopilot/sessions/AqE",
                Route::RevokeAutopilotSession,
            ),
            (
                Method::DELETE,
                "/v1/autopilot/sessions/",
                Route::Passthrough,
            ),
            (Method::GET, "/v1/autopilot/features", Route::Passthrough),
            (Method::POST, "/lnrpc.Lightning/GetInfo", Route::Passthrough),
        ];
        for (m, p, want) in cases {
            assert_eq!(Route::classify(&m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn rest_and_grpc_path_shapes() {
        for p in ["/v1/sessions", "/v12/x", "/v2/router/send"] {
            assert!(is_rest_path(p), "{p}");
        }
        for p in [
            "/vx/",
            "/v1",
            "/index.html",
            "/litrpc.Sessions/ListSessions",
        ] {
            assert!(!is_rest_path(p), "{p}");
        }
        assert!(is_grpc_shaped("/litrpc.Sessions/ListSessions"));
        assert!(!is_grpc_shaped("/v1/sessions"));
        assert!(!is_grpc_shaped("/a.B/c/d"));
    }
}
