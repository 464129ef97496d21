//! litgate's error type. Each variant says whose fault it was (the caller, litd, the Autopilot
//! server, or litgate itself) and carries the gRPC code it becomes. Errors become responses in
//! one place per face: the rescue layer (`layers::rescue`) and the relay's `Relay::finish`.
//! Messages never contain credentials. What a caller is told ([`Error::public_message`]) never
//! names an internal address or an OS error: that detail (the `Display` of the error, with its
//! causes) goes to the log only. A leaf: it imports nothing from litgate.

use std::time::Duration;

use tonic::Code;

/// A boxed cause.
type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can stop litgate from answering a request with litd's own response.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something litgate refuses: malformed input or a policy refusal.
    #[error("{message}")]
    Client {
        /// INVALID_ARGUMENT, FAILED_PRECONDITION, UNIMPLEMENTED, ...
        code: Code,
        /// Names the field and the reason.
        message: String,
    },
    /// The caller exceeded a rate limit; the request never reached litd.
    #[error("{message}")]
    RateLimited {
        /// Names the limit.
        message: String,
        /// When a retry can succeed.
        retry_after: Duration,
    },
    /// litgate had `listen.max_in_flight` calls in flight; the request never reached litd.
    #[error("litgate is serving as many calls as it may (listen.max_in_flight); retry later")]
    Overloaded {
        /// When a retry can succeed.
        retry_after: Duration,
    },
    /// litd could not be reached, or the connection to it failed.
    #[error("litd at {addr} is unavailable: {reason}")]
    Upstream {
        /// litd's configured address.
        addr: String,
        /// The transport error, without credentials.
        reason: String,
    },
    /// The Autopilot server could not be reached or failed.
    #[error("Autopilot server {addr} is unavailable: {reason}")]
    Autopilot {
        /// The server's configured address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// litd refused a call litgate made on its own behalf (with `[upstream] macaroon`): the
    /// operator's configuration is at fault, not any caller.
    #[error("litd refused litgate's own {method} call ({code:?}): {message}")]
    OwnCallRefused {
        /// The method litgate called.
        method: &'static str,
        /// litd's code.
        code: Code,
        /// litd's message.
        message: String,
    },
    /// A fault in litgate itself: what failed (sent to the caller), and why (logged).
    #[error("litgate internal error: {message}")]
    Internal {
        /// What failed, without internals.
        message: String,
        /// The cause, for the log.
        #[source]
        source: Option<Source>,
    },
}

impl Error {
    /// A client error with `code`.
    pub fn client(code: Code, message: impl Into<String>) -> Self {
        Error::Client {
            code,
            message: message.into(),
        }
    }

    /// INVALID_ARGUMENT: a malformed request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::client(Code::InvalidArgument, message)
    }

    /// A fault in litgate itself, with no cause beneath it.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// A fault in litgate itself, caused by `source`.
    pub fn internal_from(message: impl Into<String>, source: impl Into<Source>) -> Self {
        Error::Internal {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// What the caller is told: the refusal's own words for the caller's faults, and for the
    /// rest only what failed. Addresses, transport and OS errors stay in the log
    /// ([`Error::log`]): they tell a stranger about the network behind litgate, and the caller
    /// can do nothing with them.
    pub fn public_message(&self) -> String {
        match self {
            Error::Client { message, .. } | Error::RateLimited { message, .. } => message.clone(),
            Error::Overloaded { .. } => "litgate is overloaded; retry later".into(),
            Error::Upstream { .. } => "litd is unavailable".into(),
            Error::Autopilot { .. } => "the Autopilot server is unavailable".into(),
            Error::OwnCallRefused { method, .. } => {
                format!("litgate internal error: litd refused litgate's own {method} call")
            }
            Error::Internal { message, .. } => format!("litgate internal error: {message}"),
        }
    }

    /// Logs a call litgate refused or could not complete, once, with every cause. A caller's
    /// fault, a rate limit or an unreachable peer is logged at `debug` (a flood of refused
    /// calls must not become a flood of log lines; `litgate_refusals_total` counts them, and
    /// outages are logged where they are seen); litgate's own faults at `warn`.
    pub fn log(&self, what: &'static str) {
        let (error, kind, code) = (chain(self), self.kind(), code_name(self.code()));
        match self {
            Error::OwnCallRefused { .. } | Error::Internal { .. } => {
                tracing::warn!(%error, kind, code, "{what}")
            }
            _ => tracing::debug!(%error, kind, code, "{what}"),
        }
    }

    /// FAILED_PRECONDITION: a well-formed request that policy refuses.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::client(Code::FailedPrecondition, message)
    }

    /// The gRPC status code this error becomes.
    pub fn code(&self) -> Code {
        match self {
            Error::Client { code, .. } => *code,
            Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::Overloaded { .. } | Error::Upstream { .. } | Error::Autopilot { .. } => {
                Code::Unavailable
            }
            Error::OwnCallRefused { .. } | Error::Internal { .. } => Code::Internal,
        }
    }

    /// A short, bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Client { .. } => "client",
            Error::RateLimited { .. } => "rate_limited",
            Error::Overloaded { .. } => "overloaded",
            Error::Upstream { .. } => "upstream",
            Error::Autopilot { .. } => "autopilot",
            Error::OwnCallRefused { .. } => "own_call_refused",
            Error::Internal { .. } => "internal",
        }
    }
}

/// The HTTP status grpc-gateway gives a gRPC code (`runtime.HTTPStatusFromCode`), so REST
/// callers see from litgate exactly what they would see from litd.
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        Code::Cancelled => S::from_u16(499).unwrap_or(S::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => S::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => S::BAD_REQUEST,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        Code::NotFound => S::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => S::CONFLICT,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::Unauthenticated => S::UNAUTHORIZED,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
    }
}

/// A gRPC code's name as gRPC's own libraries write it (`OK`, `InvalidArgument`,
/// `Unavailable`, ...: the names go-grpc-prometheus puts in its `grpc_code` label), for log
/// fields and metric labels.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// An error and its causes on one line (`a: b: c`), each cause once, for messages that name
/// what failed underneath (transport errors wrap several layers deep).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_log_at_debug_and_litgates_own_faults_at_warn() {
        let cfg = crate::telemetry::config::LogConfig::default(); // info
        let refusals = [
            Error::invalid("bad field"),
            Error::RateLimited {
                message: "slow down".into(),
                retry_after: Duration::from_secs(1),
            },
            Error::Upstream {
                addr: "127.0.0.1:8443".into(),
                reason: "connection refused".into(),
            },
        ];
        let out = crate::telemetry::tests::capture(&cfg, || {
            for e in &refusals {
                e.log("refused");
            }
        });
        assert_eq!(out, "", "nothing at info for a refusal");
        let debug = crate::telemetry::config::LogConfig {
            level: "debug".into(),
            ..cfg.clone()
        };
        let out = crate::telemetry::tests::capture(&debug, || refusals[1].log("refused"));
        assert!(
            out.contains("DEBUG") && out.contains("rate_limited"),
            "{out}"
        );
        let out =
            crate::telemetry::tests::capture(&cfg, || Error::internal("broken").log("failed"));
        assert!(out.contains("WARN") && out.contains("internal"), "{out}");
    }

    #[test]
    fn callers_are_told_what_failed_never_where_or_why_underneath() {
        let litd = Error::Upstream {
            addr: "10.1.2.3:8443".into(),
            reason: "client error (Connect): tcp connect error: Connection refused (os error 111)"
                .into(),
        };
        assert_eq!(litd.public_message(), "litd is unavailable");
        assert!(
            litd.to_string().contains("10.1.2.3:8443"),
            "the log keeps it"
        );
        let server = Error::Autopilot {
            addr: "autopilot.internal:12010".into(),
            reason: "dns error".into(),
        };
        assert_eq!(
            server.public_message(),
            "the Autopilot server is unavailable"
        );
        let own = Error::OwnCallRefused {
            method: "ListAutopilotSessions",
            code: Code::PermissionDenied,
            message: "permission denied for uri /x".into(),
        };
        assert!(!own.public_message().contains("permission denied"));
        assert_eq!(
            Error::invalid("features: empty").public_message(),
            "features: empty"
        );
    }

    #[test]
    fn code_names_are_grpc_go_names() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::Cancelled), "Canceled");
        assert_eq!(code_name(Code::Unavailable), "Unavailable");
    }
}
