//! Shared harness for the integration tests: the demo fakes (litd, Autopilot server) and
//! litgate in-process, all on 127.0.0.1 ports chosen by the OS, plus small clients that speak
//! gRPC, grpc-web and REST over pinned TLS. Everything started here is stopped by the test.
#![allow(dead_code)]

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use litgate::{
    app::{self, Running},
    clock::ManualClock,
    config::Config,
    demo::{DemoAutopilot, DemoAutopilotConfig, DemoLitd, DemoLitdConfig},
};
use tempfile::TempDir;

/// A running fake Autopilot server, a fake litd registering with it, and litgate in front of
/// litd, on a manual clock.
pub struct Env {
    pub litd: DemoLitd,
    pub autopilot: DemoAutopilot,
    pub gate: Running,
    pub dir: TempDir,
    pub gate_cert: Vec<u8>,
    pub config: Config,
    pub clock: ManualClock,
}

/// The TOML that points litgate at `litd` and the Autopilot server at `autopilot`, with
/// `autopilot_keys` added under `[autopilot]` and `extra` appended (whole extra tables).
pub fn config_toml_with(
    dir: &Path,
    litd: &DemoLitd,
    autopilot: SocketAddr,
    autopilot_keys: &str,
    extra: &str,
) -> String {
    config_toml(dir, litd, &format!("[autopilot]\nserver = \"{autopilot}\"\nplaintext = true\ntimeout = \"2s\"\n{autopilot_keys}\n{extra}"))
}

/// The TOML that points litgate at `litd`, with `extra` appended (whole extra tables).
pub fn config_toml(dir: &Path, litd: &DemoLitd, extra: &str) -> String {
    let cert = dir.join("litd-tls.cert");
    std::fs::write(&cert, litd.cert_pem().expect("demo litd runs TLS")).unwrap();
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
drain_timeout = "5s"

[upstream]
addr = "{addr}"
tls_cert = "{cert}"
server_name = "localhost"
connect_timeout = "1s"

[autopilot.relay]
addr = ""

[store]
data_dir = "{data}"

[admin]
addr = "127.0.0.1:0"
{extra}
"#,
        addr = litd.addr(),
        cert = cert.display(),
        data = dir.join("data").display(),
    )
}

/// A fake Autopilot server, a TLS fake litd registering with it directly, and a directory.
fn demo_pair() -> (DemoAutopilot, DemoLitd, TempDir) {
    demo_pair_with(false)
}

/// Same, the fake litd serving the benchmarks' AddAutopilotSession alias when `bench_alias`.
fn demo_pair_with(bench_alias: bool) -> (DemoAutopilot, DemoLitd, TempDir) {
    let autopilot =
        DemoAutopilot::start(DemoAutopilotConfig::default()).expect("demo autopilot starts");
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        autopilot: Some(autopilot.target()),
        bench_alias,
        ..Default::default()
    })
    .expect("demo litd starts");
    (autopilot, litd, tempfile::tempdir().unwrap())
}

impl Env {
    /// Starts a TLS fake litd and litgate in front of it.
    pub async fn start() -> Env {
        Self::start_with("").await
    }

    /// Same, with extra TOML tables.
    pub async fn start_with(extra: &str) -> Env {
        Self::start_opts("", extra).await
    }

    /// A fake Autopilot server, litgate with its relay on, and a fake litd whose autopilot
    /// client goes through the relay (litd's `--autopilot.address` = the relay); litgate has
    /// its own macaroon for reconciliation. `extra`: whole TOML tables.
    pub async fn start_relay(extra: &str) -> Env {
        Self::start_relay_with(extra, |_| {}).await
    }

    /// litgate with its relay on, and a fake litd that registers with the fake Autopilot
    /// server directly, around the relay (as a litd whose `--autopilot.address` was not
    /// changed): the public face records its approvals and nothing consumes them, so a test
    /// can look at them.
    pub async fn start_relay_bypassed(extra: &str) -> Env {
        let env = Self::start_relay(extra).await;
        env.litd.set_autopilot(Some(env.autopilot.target()));
        env
    }

    /// Same, with `edit` adjusting the config value before start.
    pub async fn start_relay_with(extra: &str, edit: impl FnOnce(&mut Config)) -> Env {
        let autopilot =
            DemoAutopilot::start(DemoAutopilotConfig::default()).expect("demo autopilot starts");
        let litd = DemoLitd::start(DemoLitdConfig {
            tls: true,
            ..Default::default()
        })
        .expect("demo litd starts");
        let dir = tempfile::tempdir().unwrap();
        let mac = write(dir.path(), "litgate.macaroon", &litd.macaroon_hex());
        let toml = config_toml_with(dir.path(), &litd, autopilot.addr(), "", extra);
        let mut config =
            Config::parse(&toml).unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml}"));
        config.autopilot.relay.addr = Some(([127, 0, 0, 1], 0).into());
        config.upstream.macaroon = mac;
        edit(&mut config);
        config
            .validate()
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        Self::launch_config(litd, autopilot, dir, config, ManualClock::new()).await
    }

    /// Starts litgate on `toml`.
    async fn launch(
        litd: DemoLitd,
        autopilot: DemoAutopilot,
        dir: TempDir,
        toml: &str,
        clock: ManualClock,
    ) -> Env {
        let config =
            Config::parse(toml).unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml}"));
        Self::launch_config(litd, autopilot, dir, config, clock).await
    }

    /// Starts litgate on `config`.
    async fn launch_config(
        litd: DemoLitd,
        autopilot: DemoAutopilot,
        dir: TempDir,
        config: Config,
        clock: ManualClock,
    ) -> Env {
        let gate = app::start_with_clock(&config, std::sync::Arc::new(clock.clone()))
            .await
            .expect("litgate starts");
        Self::assemble(litd, autopilot, dir, config, clock, gate)
    }

    /// The environment around a started litgate; when its relay is on, litd's autopilot client
    /// is pointed at it.
    fn assemble(
        litd: DemoLitd,
        autopilot: DemoAutopilot,
        dir: TempDir,
        config: Config,
        clock: ManualClock,
        gate: Running,
    ) -> Env {
        if let Some(relay) = gate.relay_addr {
            litd.set_autopilot(Some(litgate::demo::AutopilotTarget {
                addr: relay,
                tls_cert_pem: None,
            }));
        }
        let gate_cert = std::fs::read(gate.cert_path.as_ref().expect("TLS public face")).unwrap();
        Env {
            litd,
            autopilot,
            gate,
            dir,
            gate_cert,
            config,
            clock,
        }
    }

    /// Stops litgate and starts it again on the same config and data directory. In-process,
    /// sled's lock goes only when the last handle of the old store is dropped (connection tasks
    /// wind down after the drain), so the start is retried, bounded; a real restart is a new
    /// process and has no such wait.
    pub async fn restart_gate(self) -> Env {
        let Env {
            litd,
            autopilot,
            gate,
            dir,
            config,
            clock,
            ..
        } = self;
        gate.shutdown().await;
        let mut last = None;
        for _ in 0..10 {
            match app::start_with_clock(&config, std::sync::Arc::new(clock.clone())).await {
                Ok(gate) => return Self::assemble(litd, autopilot, dir, config, clock, gate),
                Err(e) => last = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("litgate did not restart: {last:?}");
    }

    /// Same as [`Env::start`], the fake litd also serving AddAutopilotSession at the
    /// benchmarks' alias path (`litgate::demo::litd::BENCH_ADD_ALIAS`).
    pub async fn start_bench_alias() -> Env {
        let (autopilot, litd, dir) = demo_pair_with(true);
        let toml = config_toml_with(dir.path(), &litd, autopilot.addr(), "", "");
        Self::launch(litd, autopilot, dir, &toml, ManualClock::new()).await
    }

    /// Same, with keys for `[autopilot]` and extra TOML tables.
    pub async fn start_opts(autopilot_keys: &str, extra: &str) -> Env {
        let (autopilot, litd, dir) = demo_pair();
        let toml = config_toml_with(dir.path(), &litd, autopilot.addr(), autopilot_keys, extra);
        Self::launch(litd, autopilot, dir, &toml, ManualClock::new()).await
    }

    /// Same as [`Env::start_with`], with the config written to `litgate.toml` in the test's
    /// directory and loaded from there as `run` loads it, so that a reload re-reads it.
    /// `listen_keys` go into `[listen]`.
    pub async fn start_from_file(listen_keys: &str, extra: &str) -> Env {
        let (autopilot, litd, dir) = demo_pair();
        let toml = config_toml_with(dir.path(), &litd, autopilot.addr(), "", extra).replacen(
            "[listen]\n",
            &format!("[listen]\n{listen_keys}"),
            1,
        );
        let path = write(dir.path(), "litgate.toml", &toml);
        let config =
            Config::load(&path).unwrap_or_else(|e| panic!("test config is invalid: {e:?}\n{toml}"));
        Self::launch_config(litd, autopilot, dir, config, ManualClock::new()).await
    }

    /// Rewrites the `litgate.toml` of [`Env::start_from_file`] with `extra` in place of the
    /// tables it started with.
    pub fn rewrite_config(&self, listen_keys: &str, extra: &str) {
        let toml = config_toml_with(
            self.dir.path(),
            &self.litd,
            self.autopilot.addr(),
            "",
            extra,
        )
        .replacen("[listen]\n", &format!("[listen]\n{listen_keys}"), 1);
        write(self.dir.path(), "litgate.toml", &toml);
    }

    /// A TLS fake Autopilot server (its certificate shaped as lnd makes them) pinned by
    /// litgate through `[autopilot] tls_cert`, a TLS fake litd, and litgate with its relay on
    /// (litd registering through it). `edit` adjusts the config value before start.
    pub async fn start_pinned_autopilot(edit: impl FnOnce(&mut Config)) -> Env {
        let autopilot = DemoAutopilot::start(DemoAutopilotConfig {
            tls: true,
            ..Default::default()
        })
        .expect("demo autopilot starts");
        let litd = DemoLitd::start(DemoLitdConfig {
            tls: true,
            ..Default::default()
        })
        .expect("demo litd starts");
        let dir = tempfile::tempdir().unwrap();
        let pinned = write(
            dir.path(),
            "autopilot.cert",
            std::str::from_utf8(autopilot.cert_pem().expect("TLS autopilot")).unwrap(),
        );
        let mut config = Config::parse(&config_toml(dir.path(), &litd, "")).unwrap();
        config.autopilot.server = autopilot.addr().to_string();
        config.autopilot.tls_cert = pinned;
        config.autopilot.plaintext = false;
        config.autopilot.timeout = Duration::from_secs(2);
        config.autopilot.relay.addr = Some(([127, 0, 0, 1], 0).into());
        edit(&mut config);
        config
            .validate()
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        Self::launch_config(litd, autopilot, dir, config, ManualClock::new()).await
    }

    pub fn gate_uri(&self, path: &str) -> String {
        format!("https://{}{}", self.gate.public_addr, path)
    }

    pub fn litd_uri(&self, path: &str) -> String {
        format!("https://{}{}", self.litd.addr(), path)
    }

    pub fn admin_uri(&self, path: &str) -> String {
        format!("http://{}{}", self.gate.admin_addr, path)
    }

    pub fn macaroon(&self) -> String {
        self.litd.macaroon_hex()
    }

    /// A tonic channel to litgate, pinned to its generated certificate.
    pub async fn gate_channel(&self) -> tonic::transport::Channel {
        channel(self.gate.public_addr, &self.gate_cert).await
    }

    /// A tonic channel straight to the fake litd.
    pub async fn litd_channel(&self) -> tonic::transport::Channel {
        channel(self.litd.addr(), self.litd.cert_pem().unwrap()).await
    }

    pub async fn stop(self) {
        self.gate.shutdown().await;
        self.litd.shutdown().await;
        self.autopilot.shutdown().await;
    }
}

/// litgate alone in front of a TLS fake litd (no Autopilot server), on the system clock: for
/// tests that stop litgate themselves.
pub struct Bare {
    pub litd: DemoLitd,
    pub gate: Running,
    pub gate_cert: Vec<u8>,
    pub dir: TempDir,
}

impl Bare {
    /// Started with `[listen] drain_timeout = drain`.
    pub async fn with_drain(drain: Duration) -> Bare {
        let litd = DemoLitd::start(DemoLitdConfig {
            tls: true,
            ..Default::default()
        })
        .expect("demo litd starts");
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::parse(&config_toml(dir.path(), &litd, "")).unwrap();
        config.listen.drain_timeout = drain;
        let gate = app::start(&config).await.expect("litgate starts");
        let gate_cert = std::fs::read(gate.cert_path.as_ref().unwrap()).unwrap();
        Bare {
            litd,
            gate,
            gate_cert,
            dir,
        }
    }
}

/// A tonic channel pinning exactly `cert_pem` (lnd-shaped CA certificates included, as Go's
/// and OpenSSL-based clients accept them).
pub async fn channel(addr: SocketAddr, cert_pem: &[u8]) -> tonic::transport::Channel {
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    litgate::tls::pinned::tonic_channel(ep, rustls_config(cert_pem))
}

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client config pinning exactly `cert_pem`, as litd's own clients pin `tls.cert`.
pub fn rustls_config(cert_pem: &[u8]) -> rustls::ClientConfig {
    litgate::tls::pinned::pem_client_config(cert_pem).unwrap()
}

/// An HTTP/2-only client trusting `cert_pem` (gRPC and grpc-web over h2).
pub fn h2_client(cert_pem: &[u8]) -> HttpClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls_config(cert_pem))
        .https_or_http()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(https)
}

/// An HTTP/1.1-only client trusting `cert_pem` (REST and the Terminal UI's grpc-web).
pub fn h1_client(cert_pem: &[u8]) -> HttpClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls_config(cert_pem))
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

/// A response read to the end: head, body bytes, trailers.
#[derive(Debug)]
pub struct Collected {
    pub status: http::StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Collected {
    /// grpc-status from trailers, or from the head for trailers-only responses.
    pub fn grpc_status(&self) -> Option<String> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .map(|v| v.to_str().unwrap().to_string())
    }

    pub fn grpc_message(&self) -> Option<String> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .or_else(|| self.headers.get("grpc-message"))
            .map(|v| {
                percent_encoding::percent_decode_str(v.to_str().unwrap())
                    .decode_utf8_lossy()
                    .into_owned()
            })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

pub async fn send(client: &HttpClient, req: http::Request<Full<Bytes>>) -> Collected {
    let resp = client
        .request(req)
        .await
        .expect("request reaches the server");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body completes");
    let trailers = collected.trailers().cloned();
    Collected {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// One gRPC length-prefixed message.
pub fn grpc_frame(msg: &impl prost::Message) -> Bytes {
    let payload = msg.encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.put_slice(&payload);
    b.freeze()
}

/// Splits a gRPC or grpc-web body into (flag, payload) frames.
pub fn frames(mut body: Bytes) -> Vec<(u8, Bytes)> {
    let mut out = Vec::new();
    while body.remaining() >= 5 {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        out.push((flag, body.split_to(len)));
    }
    assert!(body.is_empty(), "trailing partial frame");
    out
}

/// The headers of a grpc-web trailer frame's block (`name: value` lines).
pub fn trailer_block(block: &[u8]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for line in std::str::from_utf8(block).expect("ASCII block").lines() {
        let (name, value) = line.split_once(':').expect("a header line");
        out.append(
            http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()).unwrap(),
            value.trim().parse().unwrap(),
        );
    }
    out
}

/// A gRPC request (h2) for `path` with `body` and optional macaroon.
pub fn grpc_request(uri: &str, body: Bytes, macaroon: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::post(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(m) = macaroon {
        b = b.header("macaroon", m);
    }
    b.body(Full::new(body)).unwrap()
}

/// Polls `f` until it returns true, at most `tries` times, `every` apart.
pub async fn eventually<F, Fut>(tries: usize, every: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..tries {
        if f().await {
            return true;
        }
        tokio::time::sleep(every).await;
    }
    false
}

/// A plain HTTP/1.1 GET (admin endpoints).
pub async fn admin_get(uri: &str) -> (u16, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let resp = client
        .get(uri.parse().unwrap())
        .await
        .expect("admin answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of an un-labelled counter or a sum over a family in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The real `litgate` binary, for tests that signal or kill the process. Its listeners bind
/// 127.0.0.1 port 0; the process reports the addresses it got on stdout
/// (`litgate listening public=… admin=… relay=…`), which [`Binary::spawn`] reads.
pub struct Binary {
    pub config: PathBuf,
    dir: PathBuf,
}

/// A started `litgate run`, with the addresses it reported.
pub struct Spawned {
    pub child: std::process::Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
}

impl Binary {
    /// Writes a config pointing at `litd` (with `extra` tables) into `dir`: the binary reads
    /// a TOML file.
    pub fn prepare(dir: &Path, litd: &DemoLitd, extra: &str) -> Binary {
        let config = write(dir, "litgate.toml", &config_toml(dir, litd, extra));
        Binary {
            config,
            dir: dir.to_path_buf(),
        }
    }

    /// Starts `litgate run`, its stderr in `log` under the test's directory, and waits
    /// (bounded) for the line that says where it listens; panics with the log otherwise.
    pub async fn spawn(&self, log: &str) -> Spawned {
        self.spawn_with_env(log, &[]).await
    }

    /// Same as [`Binary::spawn`], with `env` added to the child's environment.
    pub async fn spawn_with_env(&self, log: &str, env: &[(&str, &std::ffi::OsStr)]) -> Spawned {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_litgate"))
            .args(["run", "--config"])
            .arg(&self.config)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(self.dir.join(log)).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The line is read on a thread of its own; the rest of stdout is drained there too.
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let listening = lines
                .by_ref()
                .map_while(Result::ok)
                .find(|l| l.starts_with("litgate listening "));
            let _ = tx.send(listening);
            lines.for_each(drop);
        });
        let line = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .unwrap_or_else(|| {
                panic!(
                    "litgate did not report its listeners: {}",
                    std::fs::read_to_string(self.dir.join(log)).unwrap_or_default()
                )
            });
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} address in {line:?}"))
        };
        Spawned {
            public: addr("public="),
            admin: addr("admin="),
            child,
        }
    }
}

/// Sends `child` SIGTERM (litgate's graceful stop).
pub fn sigterm(child: &std::process::Child) {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// The gRPC path and REST twin of AddAutopilotSession.
pub const ADD_AUTOPILOT: &str = "/litrpc.Autopilot/AddAutopilotSession";
pub const REST_ADD_AUTOPILOT: &str = "/v1/autopilot/sessions";

/// The AddAutopilotSession requests litd received, decoded from whichever protocol carried
/// them (gRPC and grpc-web frames, grpc-web-text, REST JSON).
pub fn adds_received(litd: &DemoLitd) -> Vec<litgate::proto::litrpc::AddAutopilotSessionRequest> {
    use base64::Engine;
    use prost::Message;
    litd.received()
        .into_iter()
        .filter(|r| r.path == ADD_AUTOPILOT || (r.path == REST_ADD_AUTOPILOT && r.method == "POST"))
        .map(|r| {
            if r.path == REST_ADD_AUTOPILOT {
                if r.body.iter().all(u8::is_ascii_whitespace) {
                    return Default::default();
                }
                return serde_json::from_slice(&r.body)
                    .unwrap_or_else(|e| panic!("litd received bad JSON ({e}): {:?}", r.body));
            }
            let framed = if r.content_type.starts_with("application/grpc-web-text") {
                Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(&r.body)
                        .expect("base64"),
                )
            } else {
                r.body.clone()
            };
            let (_, msg) = frames(framed).remove(0);
            litgate::proto::litrpc::AddAutopilotSessionRequest::decode(msg).expect("protobuf")
        })
        .collect()
}

/// How many AddAutopilotSession calls litd received that could write anything: one with
/// features, or a WebSocket upgrade to it (whose content is not recorded). litgate's
/// authentication probes carry no features (litd refuses them before writing).
pub fn writable_adds(litd: &DemoLitd) -> usize {
    let upgrades = litd
        .received()
        .iter()
        .filter(|r| r.path == ADD_AUTOPILOT && r.method != "POST")
        .count();
    upgrades
        + adds_received(litd)
            .iter()
            .filter(|r| !r.features.is_empty())
            .count()
}

/// A request carrying the test's macaroon in its metadata.
pub fn with_macaroon<T>(env: &Env, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let mac: tonic::metadata::MetadataValue<_> = env.macaroon().parse().unwrap();
    r.metadata_mut().insert("macaroon", mac);
    r
}

/// A client of litgate's relay face, as litd's autopilot client talks to it (plaintext).
pub async fn relay_client(
    env: &Env,
) -> litgate::proto::autopilotserverrpc::autopilot_client::AutopilotClient<tonic::transport::Channel>
{
    let relay = env.gate.relay_addr.expect("the relay is on");
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{relay}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    litgate::proto::autopilotserverrpc::autopilot_client::AutopilotClient::new(ch)
}

/// `litgate registrations --admin <env's admin>` run as the built binary: its standard output.
pub async fn registrations_command(env: &Env) -> String {
    let admin = env.gate.admin_addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_litgate"))
            .args(["registrations", "--admin", &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// SIGTERM to a spawned litgate, then its exit (bounded by its drain deadline), which must be
/// clean (exit 0).
pub async fn stop_cleanly(child: std::process::Child) {
    let mut child = child;
    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

impl Env {
    /// Same as [`Env::start`], with `edit` adjusting the config value before start (keys of
    /// tables the base config already has, such as `[listen]`).
    pub async fn start_editing(edit: impl FnOnce(&mut Config)) -> Env {
        let (autopilot, litd, dir) = demo_pair();
        let toml = config_toml_with(dir.path(), &litd, autopilot.addr(), "", "");
        let mut config =
            Config::parse(&toml).unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml}"));
        edit(&mut config);
        config
            .validate()
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        Self::launch_config(litd, autopilot, dir, config, ManualClock::new()).await
    }
}

/// A TLS connection to `addr` pinning `cert_pem`, offering `alpn` (e.g. `b"h2"`).
pub async fn tls_connect(
    addr: SocketAddr,
    cert_pem: &[u8],
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut cfg = rustls_config(cert_pem);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
}

/// The value of `name`'s series whose labels include `label` (e.g. `reason="idle_timeout"`)
/// in Prometheus text; 0 when there is none.
pub fn metric_labelled(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Log lines of the tracing events emitted on this thread while the guard from
/// [`Logs::capture`] lives. `#[tokio::test]` runs a current-thread runtime, so litgate's
/// in-process tasks log on the test's thread.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// Starts capturing events at INFO and above on this thread.
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// How many captured lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.text().lines().filter(|l| l.contains(needle)).count()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// A TCP server on 127.0.0.1 (port chosen by the OS) that accepts connections and never
/// sends a byte (a black-holed peer), until [`BlackHole::forward_to`] makes it pass new
/// connections through to a real server. Stopped (every connection closed) when dropped.
pub struct BlackHole {
    pub addr: SocketAddr,
    forward: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    pub async fn start() -> BlackHole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let forward = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let to = forward.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            let mut piping = tokio::task::JoinSet::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                let target = *to.lock().unwrap();
                match target {
                    None => held.push(conn),
                    Some(target) => {
                        piping.spawn(async move {
                            if let Ok(mut up) = tokio::net::TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                            }
                        });
                    }
                }
            }
        });
        BlackHole {
            addr,
            forward,
            task,
        }
    }

    /// From now on, new connections are passed through to `target` (`None`: held silent).
    pub fn forward_to(&self, target: Option<SocketAddr>) {
        *self.forward.lock().unwrap() = target;
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/2 call to litgate's public face over pinned TLS whose stream window is 0, so
/// litgate can send none of the answer: what a client that never reads costs. Returns the
/// answer's head, and what must be kept for the call to stay open.
pub async fn stalled_call(
    env: &Env,
    path: &str,
    macaroon: &str,
    body: Bytes,
) -> (http::response::Parts, impl Sized) {
    let mut tls = rustls_config(&env.gate_cert);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(env.gate.public_addr)
        .await
        .unwrap();
    let io = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(io)
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.unwrap();
    let req = http::Request::post(env.gate_uri(path))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("macaroon", macaroon)
        .body(())
        .unwrap();
    let (resp, mut stream) = send.send_request(req, false).unwrap();
    stream.send_data(body, true).unwrap();
    let (head, recv) = resp.await.unwrap().into_parts();
    (head, (send, stream, recv, AbortOnDrop(conn)))
}

/// Aborts a task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An AddAutopilotSession request as a client writes one: `label`, expiring a day from now, a
/// mailbox address, and each feature with its config bytes (`""`: none).
pub fn autopilot_add(
    label: &str,
    features: &[(&str, &str)],
) -> litgate::proto::litrpc::AddAutopilotSessionRequest {
    use litgate::proto::litrpc::{AddAutopilotSessionRequest, FeatureConfig};
    let in_a_day = std::time::SystemTime::now() + Duration::from_secs(86_400);
    AddAutopilotSessionRequest {
        label: label.into(),
        expiry_timestamp_seconds: in_a_day
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        mailbox_server_addr: "mailbox.example:443".into(),
        features: features
            .iter()
            .map(|(name, config)| {
                let config = config.as_bytes().to_vec();
                (
                    name.to_string(),
                    FeatureConfig {
                        rules: None,
                        config,
                    },
                )
            })
            .collect(),
        ..Default::default()
    }
}
