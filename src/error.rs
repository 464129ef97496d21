//! litgate's error type. Each variant says whose fault it was (the caller, litd, the Autopilot
//! server, or litgate itself) and carries the gRPC code it becomes. Errors become responses in
//! one place per face: the rescue layer (`layers::rescue`) and the relay's `Relay::finish`.
//! Messages never contain credentials; litgate's own faults keep their cause as `source` for
//! the log and show the caller only what failed. A leaf: it imports nothing from litgate.

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

    /// Logs a call litgate refused or could not complete, once, with every cause.
    pub fn log(&self, what: &'static str) {
        tracing::warn!(error = %chain(self), kind = self.kind(), code = ?self.code(), "{what}");
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
