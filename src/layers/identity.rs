//! Identity: reads the caller's credential and peer address into a [`Caller`] request
//! extension, for the rate limiter (which names a caller by the macaroon **identifier**, so
//! attenuated copies share one identity) and the session cache (keyed by the **full**
//! credential). It sits after metrics and before the rate limiter. It never rejects a request
//! (litd decides what a credential is worth) and never logs credential bytes.

use std::{
    net::SocketAddr,
    task::{Context, Poll},
    time::SystemTime,
};

use bytes::Bytes;
use http::{header, HeaderMap};
use tower::{Layer, Service};

use crate::{
    body::Request,
    headers::{GRPC_METADATA_MACAROON, MACAROON},
    macaroon::Macaroon,
    server::ConnectInfo,
};

/// How a credential was carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// `macaroon` metadata or `Grpc-Metadata-Macaroon` header: hex of a V2 macaroon.
    Macaroon,
    /// `authorization: Basic ...` (the UI password, which litd turns into a macaroon).
    Basic,
}

/// The caller's credential. Secret: its `Debug` shows only the kind.
#[derive(Clone)]
pub struct Credential {
    /// How it was carried.
    pub kind: CredentialKind,
    /// The header value exactly as sent.
    pub raw: Bytes,
    /// The parsed macaroon, when it is one that parses.
    pub macaroon: Option<Macaroon>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind)
            .field("parsed", &self.macaroon.is_some())
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// The macaroon identifier: the same for every attenuated copy of one macaroon.
    pub fn identifier(&self) -> Option<&Bytes> {
        self.macaroon.as_ref().map(|m| &m.identifier)
    }

    /// The earliest `time-before` caveat, if any.
    pub fn time_before(&self) -> Option<SystemTime> {
        self.macaroon.as_ref().and_then(Macaroon::time_before)
    }
}

/// Who is calling: a request extension set by the identity layer.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The TCP peer.
    pub peer: Option<SocketAddr>,
    /// The credential, if one was sent.
    pub credential: Option<Credential>,
}

impl Caller {
    /// Reads the caller from request headers and connection info.
    pub(crate) fn from_parts(headers: &HeaderMap, info: Option<&ConnectInfo>) -> Caller {
        Caller {
            peer: info.map(|i| i.peer),
            credential: credential(headers),
        }
    }
}

fn credential(headers: &HeaderMap) -> Option<Credential> {
    // gRPC metadata `macaroon`, grpc-web header `macaroon`, REST `Grpc-Metadata-Macaroon`.
    let mac = headers
        .get(MACAROON)
        .or_else(|| headers.get(GRPC_METADATA_MACAROON));
    if let Some(v) = mac {
        let raw = Bytes::copy_from_slice(v.as_bytes());
        let macaroon = v.to_str().ok().and_then(|t| Macaroon::from_hex(t).ok());
        return Some(Credential {
            kind: CredentialKind::Macaroon,
            raw,
            macaroon,
        });
    }
    let auth = headers.get(header::AUTHORIZATION)?;
    let is_basic =
        auth.as_bytes().len() > 6 && auth.as_bytes()[..6].eq_ignore_ascii_case(b"basic ");
    is_basic.then(|| Credential {
        kind: CredentialKind::Basic,
        raw: Bytes::copy_from_slice(auth.as_bytes()),
        macaroon: None,
    })
}

/// Inserts [`Caller`] into every request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdentityLayer;

impl<S> Layer<S> for IdentityLayer {
    type Service = Identity<S>;

    fn layer(&self, inner: S) -> Identity<S> {
        Identity { inner }
    }
}

/// See [`IdentityLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Identity<S> {
    inner: S,
}

impl<S: Service<Request>> Service<Request> for Identity<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> S::Future {
        let caller = Caller::from_parts(req.headers(), req.extensions().get::<ConnectInfo>());
        req.extensions_mut().insert(caller);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const MAC: &str = "0201036c6e640206034944454e5400000620a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2";

    #[test]
    fn reads_each_carrier() {
        for name in ["macaroon", "grpc-metadata-macaroon"] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(MAC));
            let c = Caller::from_parts(&h, None).credential.unwrap();
            assert_eq!(c.kind, CredentialKind::Macaroon);
            assert_eq!(&c.identifier().unwrap()[..], b"\x03IDENT");
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dWk6dWk="),
        );
        let c = Caller::from_parts(&h, None).credential.unwrap();
        assert_eq!(c.kind, CredentialKind::Basic);
        assert!(c.identifier().is_none());
    }

    #[test]
    fn unparseable_macaroon_is_kept_raw_and_debug_hides_it() {
        let mut h = HeaderMap::new();
        h.insert("macaroon", HeaderValue::from_static("deadbeef"));
        let c = Caller::from_parts(&h, None).credential.unwrap();
        assert!(c.macaroon.is_none());
        assert_eq!(&c.raw[..], b"deadbeef");
        assert!(!format!("{c:?}").contains("deadbeef"));
    }
}
