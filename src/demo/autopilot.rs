//! `DemoAutopilot`: a fake Autopilot server (`autopilotserverrpc.Autopilot`) for the demo and
//! the tests. It serves the catalogue of LiT's own test mock (HealthCheck, AutoFees, AutoOpen),
//! records every registration and revocation it receives, and can be told to fail a method or
//! to go down and come back. Plaintext (h2c) or TLS with a self-signed certificate.
//!
//! A fake: it never talks to the real Autopilot server and is never used for real traffic.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use tonic::{Request, Response, Status};

use super::serve::{Handler, Server};
use crate::autopilot::rules;
use crate::proto::autopilotserverrpc::{
    autopilot_server::{Autopilot, AutopilotServer},
    ActivateSessionRequest, ActivateSessionResponse, Feature, ListFeaturesRequest,
    ListFeaturesResponse, Operation, Permissions, RegisterSessionRequest, RegisterSessionResponse,
    RevokeSessionRequest, RevokeSessionResponse, Rule, TermsRequest, TermsResponse, Version,
};

/// The Autopilot's static Noise key that the fake returns as `initiator_pub_key`.
pub const INITIATOR_KEY: [u8; 33] = [
    0x02, 0x8f, 0x3c, 0x1e, 0x5b, 0x7a, 0x42, 0x9d, 0x61, 0x0c, 0xe4, 0x37, 0xa8, 0x15, 0xbb, 0x2f,
    0x90, 0x6d, 0x48, 0xc3, 0x71, 0x0a, 0xde, 0x52, 0x99, 0x3b, 0x84, 0x1f, 0xc6, 0x27, 0x6e, 0xb0,
    0x13,
];

/// How to start a [`DemoAutopilot`].
#[derive(Debug, Clone, Default)]
pub struct DemoAutopilotConfig {
    /// Serve TLS with a self-signed cert for `localhost` and `127.0.0.1` (see
    /// [`DemoAutopilot::cert_pem`]); plaintext h2c otherwise.
    pub tls: bool,
    /// Where to listen; `None`: 127.0.0.1 on a port the OS chooses.
    pub addr: Option<SocketAddr>,
}

/// One `RegisterSession` the fake accepted.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The request as received.
    pub request: RegisterSessionRequest,
    /// When it arrived.
    pub at: SystemTime,
}

#[derive(Default)]
struct State {
    catalogue: HashMap<String, Feature>,
    min_version: Version,
    registrations: Vec<Registration>,
    /// responder key → revoked?
    sessions: HashMap<Vec<u8>, bool>,
    revocations: Vec<Vec<u8>>,
    counts: HashMap<String, usize>,
    fail: HashMap<String, Status>,
}

#[derive(Clone)]
struct Svc(Arc<Mutex<State>>);

impl Svc {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the call and returns the configured failure, if any.
    fn enter(&self, method: &str) -> Result<(), Status> {
        let mut st = self.lock();
        *st.counts.entry(method.to_string()).or_default() += 1;
        match st.fail.get(method) {
            Some(status) => Err(status.clone()),
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Autopilot for Svc {
    async fn terms(&self, _: Request<TermsRequest>) -> Result<Response<TermsResponse>, Status> {
        self.enter("Terms")?;
        let v = self.lock().min_version;
        Ok(Response::new(TermsResponse {
            min_required_version: Some(v),
        }))
    }

    async fn list_features(
        &self,
        _: Request<ListFeaturesRequest>,
    ) -> Result<Response<ListFeaturesResponse>, Status> {
        self.enter("ListFeatures")?;
        let features = self.lock().catalogue.clone();
        Ok(Response::new(ListFeaturesResponse { features }))
    }

    async fn register_session(
        &self,
        req: Request<RegisterSessionRequest>,
    ) -> Result<Response<RegisterSessionResponse>, Status> {
        self.enter("RegisterSession")?;
        let req = req.into_inner();
        if req.responder_pub_key.len() != 33 {
            return Err(Status::invalid_argument(
                "responder_pub_key must be a 33-byte compressed key",
            ));
        }
        let mut st = self.lock();
        if st.sessions.contains_key(&req.responder_pub_key) {
            return Err(Status::already_exists("session already registered"));
        }
        st.sessions.insert(req.responder_pub_key.clone(), false);
        tracing::debug!(
            features = req.feature_configs.len(),
            privacy_flags = req.privacy_flags,
            "demo autopilot: session registered"
        );
        st.registrations.push(Registration {
            request: req,
            at: SystemTime::now(),
        });
        Ok(Response::new(RegisterSessionResponse {
            initiator_pub_key: INITIATOR_KEY.to_vec(),
        }))
    }

    async fn activate_session(
        &self,
        req: Request<ActivateSessionRequest>,
    ) -> Result<Response<ActivateSessionResponse>, Status> {
        self.enter("ActivateSession")?;
        let key = req.into_inner().responder_pub_key;
        match self.lock().sessions.get(&key) {
            Some(false) => Ok(Response::new(ActivateSessionResponse {
                initiator_pub_key: INITIATOR_KEY.to_vec(),
            })),
            // litd treats this text as a permanent rejection.
            _ => Err(Status::permission_denied("the client has been rejected")),
        }
    }

    async fn revoke_session(
        &self,
        req: Request<RevokeSessionRequest>,
    ) -> Result<Response<RevokeSessionResponse>, Status> {
        self.enter("RevokeSession")?;
        let key = req.into_inner().responder_pub_key;
        let mut st = self.lock();
        if let Some(revoked) = st.sessions.get_mut(&key) {
            *revoked = true;
        }
        st.revocations.push(key);
        Ok(Response::new(RevokeSessionResponse {}))
    }
}

/// A running fake Autopilot server.
pub struct DemoAutopilot {
    server: Server,
    state: Svc,
    cert_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for DemoAutopilot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoAutopilot")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl DemoAutopilot {
    /// Starts serving; listening when this returns. Must be called inside a tokio runtime.
    pub fn start(cfg: DemoAutopilotConfig) -> io::Result<Self> {
        let state = Svc(Arc::new(Mutex::new(State {
            catalogue: mock_catalogue(),
            ..State::default()
        })));
        let (tls, cert_pem) = if cfg.tls {
            super::self_signed_tls()?
        } else {
            (None, None)
        };
        let routes = tonic::service::Routes::new(AutopilotServer::new(state.clone()));
        let handler: Handler = Arc::new(move |req: http::Request<hyper::body::Incoming>| {
            let routes = routes.clone();
            Box::pin(async move {
                let req = req.map(tonic::body::Body::new);
                match tower::ServiceExt::oneshot(routes, req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            })
        });
        let addr = cfg.addr.unwrap_or_else(super::loopback_any);
        let server = Server::start("demo-autopilot", addr, tls, handler)?;
        Ok(Self {
            server,
            state,
            cert_pem,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The self-signed certificate (PEM) when serving TLS, for clients to pin.
    pub fn cert_pem(&self) -> Option<&[u8]> {
        self.cert_pem.as_deref()
    }

    /// How a [`super::DemoLitd`] (or litgate) should reach this server.
    pub fn target(&self) -> super::AutopilotTarget {
        super::AutopilotTarget {
            addr: self.addr(),
            tls_cert_pem: self.cert_pem.clone(),
        }
    }

    /// The key returned as `initiator_pub_key`.
    pub fn initiator_key(&self) -> Vec<u8> {
        INITIATOR_KEY.to_vec()
    }

    /// Replaces the feature catalogue served by `ListFeatures`.
    pub fn set_catalogue(&self, features: HashMap<String, Feature>) {
        self.state.lock().catalogue = features;
    }

    /// The current feature catalogue.
    pub fn catalogue(&self) -> HashMap<String, Feature> {
        self.state.lock().catalogue.clone()
    }

    /// Sets the version returned by `Terms` (default 0.0.0).
    pub fn set_min_required_version(&self, major: u32, minor: u32, patch: u32) {
        self.state.lock().min_version = Version {
            major,
            minor,
            patch,
        };
    }

    /// Makes `method` (e.g. `"RegisterSession"`) fail with `status`, or succeed again with
    /// `None`. The call is still counted.
    pub fn set_fail(&self, method: &str, status: Option<Status>) {
        let mut st = self.state.lock();
        match status {
            Some(s) => st.fail.insert(method.to_string(), s),
            None => st.fail.remove(method),
        };
    }

    /// Every accepted `RegisterSession`, in order.
    pub fn registrations(&self) -> Vec<Registration> {
        self.state.lock().registrations.clone()
    }

    /// Every `responder_pub_key` received by `RevokeSession`, in order (known or not).
    pub fn revocations(&self) -> Vec<Vec<u8>> {
        self.state.lock().revocations.clone()
    }

    /// How many times `method` (`"Terms"`, `"ListFeatures"`, `"RegisterSession"`,
    /// `"ActivateSession"`, `"RevokeSession"`) was called, failures included.
    pub fn count(&self, method: &str) -> usize {
        self.state.lock().counts.get(method).copied().unwrap_or(0)
    }

    /// Forgets recorded registrations, revocations and counts (registered keys stay known).
    pub fn clear_records(&self) {
        let mut st = self.state.lock();
        st.registrations.clear();
        st.revocations.clear();
        st.counts.clear();
    }

    /// Closes the listener and every open connection; state is kept.
    pub async fn pause(&self) {
        self.server.pause().await;
    }

    /// Serves again on the same address.
    pub async fn resume(&self) -> io::Result<()> {
        self.server.resume().await
    }

    /// Stops for good.
    pub async fn shutdown(&self) {
        self.server.shutdown().await;
    }
}

fn rule(name: &str, default: &str, min: &str, max: &str) -> (String, Rule) {
    (
        name.to_string(),
        Rule {
            name: name.to_string(),
            default: default.as_bytes().to_vec(),
            min_value: min.as_bytes().to_vec(),
            max_value: max.as_bytes().to_vec(),
        },
    )
}

fn perm(method: &str, ops: &[(&str, &str)]) -> Permissions {
    Permissions {
        method: method.to_string(),
        operations: ops
            .iter()
            .map(|(e, a)| Operation {
                entity: (*e).to_string(),
                action: (*a).to_string(),
            })
            .collect(),
    }
}

fn rate_limit_rule() -> (String, Rule) {
    // The values of LiT's autopilotserver mock (`autopilotserver/mock.go`).
    rule(
        rules::RATE_LIMIT,
        r#"{"write_limit":{"iterations":1,"num_hours":1},"read_limit":{"iterations":10,"num_hours":1}}"#,
        r#"{"write_limit":{"iterations":0,"num_hours":1},"read_limit":{"iterations":1,"num_hours":1}}"#,
        r#"{"write_limit":{"iterations":10,"num_hours":1},"read_limit":{"iterations":1000,"num_hours":1}}"#,
    )
}

/// The default catalogue, modelled on LiT's test mock: `HealthCheck`, `AutoFees`, `AutoOpen`.
/// Rule values are the JSON (Go struct) forms of LiT's rule managers (`rules/*.go`).
pub fn mock_catalogue() -> HashMap<String, Feature> {
    let health = Feature {
        name: "HealthCheck".into(),
        description: "Check that your node is up and reachable".into(),
        rules: [rate_limit_rule()].into_iter().collect(),
        permissions_list: vec![perm("/lnrpc.Lightning/GetInfo", &[("info", "read")])],
        default_config: b"{}".to_vec(),
        privacy_flags: 0,
    };
    let autofees = Feature {
        name: "AutoFees".into(),
        description: "Automatically adjust channel fees based on forwarding activity".into(),
        rules: [
            rate_limit_rule(),
            rule(
                rules::CHANNEL_POLICY_BOUNDS,
                r#"{"min_base_msat":0,"max_base_msat":10000,"min_rate_ppm":1,"max_rate_ppm":5000,"min_cltv_delta":18,"max_cltv_delta":144,"min_htlc_msat":1,"max_htlc_msat":10000000000}"#,
                r#"{"min_base_msat":0,"max_base_msat":0,"min_rate_ppm":0,"max_rate_ppm":0,"min_cltv_delta":18,"max_cltv_delta":18,"min_htlc_msat":1,"max_htlc_msat":1}"#,
                r#"{"min_base_msat":100000,"max_base_msat":100000,"min_rate_ppm":10000,"max_rate_ppm":10000,"min_cltv_delta":2016,"max_cltv_delta":2016,"min_htlc_msat":100000000000,"max_htlc_msat":100000000000}"#,
            ),
            rule(
                rules::HISTORY_LIMIT,
                r#"{"start_date":"0001-01-01T00:00:00Z","duration":2592000000000000}"#,
                r#"{"start_date":"0001-01-01T00:00:00Z","duration":604800000000000}"#,
                r#"{"start_date":"0001-01-01T00:00:00Z","duration":31536000000000000}"#,
            ),
        ]
        .into_iter()
        .collect(),
        permissions_list: vec![
            perm("/lnrpc.Lightning/FeeReport", &[("offchain", "read")]),
            perm("/lnrpc.Lightning/UpdateChannelPolicy", &[("offchain", "write")]),
            perm("/lnrpc.Lightning/ForwardingHistory", &[("offchain", "read")]),
            perm("/lnrpc.Lightning/ListChannels", &[("offchain", "read")]),
        ],
        default_config: b"{}".to_vec(),
        // ClearChanIDs | ClearTimeStamps
        privacy_flags: 0x04 | 0x08,
    };
    let autoopen = Feature {
        name: "AutoOpen".into(),
        description: "Automatically open channels to well-connected peers".into(),
        rules: [
            rate_limit_rule(),
            rule(
                rules::ON_CHAIN_BUDGET,
                r#"{"absolute_amt_sats":1000000,"max_sat_per_v_byte":50}"#,
                r#"{"absolute_amt_sats":0,"max_sat_per_v_byte":1}"#,
                r#"{"absolute_amt_sats":100000000,"max_sat_per_v_byte":1000}"#,
            ),
            rule(
                rules::CHANNEL_CONSTRAINT,
                r#"{"min_capacity_msat":100000,"max_capacity_msat":16777215,"max_push_sat":0,"private_allowed":true,"public_allowed":true}"#,
                r#"{"min_capacity_msat":20000,"max_capacity_msat":20000,"max_push_sat":0,"private_allowed":false,"public_allowed":false}"#,
                r#"{"min_capacity_msat":100000000,"max_capacity_msat":100000000,"max_push_sat":100000,"private_allowed":true,"public_allowed":true}"#,
            ),
            rule(rules::PEER_RESTRICTION, r#"{"peer_deny_list":[]}"#, r#"{"peer_deny_list":[]}"#, r#"{"peer_deny_list":[]}"#),
        ]
        .into_iter()
        .collect(),
        permissions_list: vec![
            perm("/lnrpc.Lightning/GetInfo", &[("info", "read")]),
            perm("/lnrpc.Lightning/ListChannels", &[("offchain", "read")]),
            perm("/lnrpc.Lightning/WalletBalance", &[("onchain", "read")]),
            perm("/lnrpc.Lightning/ConnectPeer", &[("peers", "write")]),
            perm("/lnrpc.Lightning/OpenChannelSync", &[("onchain", "write"), ("offchain", "write")]),
        ],
        default_config: b"{}".to_vec(),
        // ClearPubkeys | ClearNetworkAddresses: opening needs real peers.
        privacy_flags: 0x01 | 0x80,
    };
    [health, autofees, autoopen]
        .into_iter()
        .map(|f| (f.name.clone(), f))
        .collect()
}
