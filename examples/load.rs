//! A small gRPC load generator for end-to-end runs (see `benches/load.sh`): one tonic channel
//! (one HTTP/2 connection over TLS pinned to `--cert`, server name `localhost`), a warmup, then
//! `--calls` unary calls with `--concurrency` of them in flight. Prints one line of JSON:
//! count, errors, median/p90/p99/mean latency in microseconds, and throughput in calls/s.
//!
//! Modes:
//! - `echo`: `litgatetest.Echo/Unary` (served by the fake litd without a macaroon; through
//!   litgate it takes the raw passthrough). `--payload` sets the message size.
//! - `add`: `litrpc.Autopilot/AddAutopilotSession` with features `{"HealthCheck": {}}` and an
//!   expiry one day ahead (every call creates a new, unlinked session). Needs `--macaroon-file`.
//! - `add-alias`: the same request to `litgate::demo::litd::BENCH_ADD_ALIAS`, which the fake
//!   litd (`examples/fake_litd`) serves with the same handler and litgate does not intercept:
//!   through litgate it is the same call as `add` taking the raw passthrough, the fair
//!   baseline for what litgate's AddAutopilotSession handling adds. Needs `--macaroon-file`.
//!
//! With `--macaroon-file`, the macaroon (hex) is sent as `macaroon` metadata in either mode.
//!
//! ```sh
//! cargo run --release --example load -- --target https://127.0.0.1:8445 \
//!     --cert tls.cert --mode echo --concurrency 40 --calls 20000
//! ```

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::{Parser, ValueEnum};
use litgate::{
    demo::litd::BENCH_ADD_ALIAS,
    proto::{
        litgatetest::{echo_client::EchoClient, EchoRequest},
        litrpc::{
            autopilot_client::AutopilotClient, AddAutopilotSessionRequest,
            AddAutopilotSessionResponse, FeatureConfig,
        },
    },
};
use tonic::{
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Mode {
    /// `litgatetest.Echo/Unary`.
    Echo,
    /// `litrpc.Autopilot/AddAutopilotSession`.
    Add,
    /// The same call at the fake litd's uninterceptable alias path.
    AddAlias,
}

/// Unary gRPC load over one HTTP/2 connection.
#[derive(Parser, Debug)]
struct Args {
    /// `https://host:port` of litgate or of the fake litd.
    #[arg(long)]
    target: String,
    /// PEM certificate to pin (server name `localhost`).
    #[arg(long)]
    cert: PathBuf,
    /// Which call to make.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured calls.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Unmeasured calls before the measured ones (same concurrency).
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// File holding the macaroon as hex, sent as `macaroon` metadata.
    #[arg(long)]
    macaroon_file: Option<PathBuf>,
    /// Echo message size in bytes.
    #[arg(long, default_value_t = 16)]
    payload: usize,
}

#[derive(Clone)]
struct Caller {
    channel: Channel,
    mode: Mode,
    macaroon: Option<MetadataValue<tonic::metadata::Ascii>>,
    payload: String,
}

impl Caller {
    /// An AddAutopilotSession request: HealthCheck, expiring a day from now, unlinked.
    fn add_request(&self) -> tonic::Request<AddAutopilotSessionRequest> {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 24 * 3600;
        let mut req = tonic::Request::new(AddAutopilotSessionRequest {
            label: "load".into(),
            expiry_timestamp_seconds: expiry,
            mailbox_server_addr: "mailbox.example:443".into(),
            features: [(
                "HealthCheck".to_string(),
                FeatureConfig {
                    rules: None,
                    config: b"{}".to_vec(),
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        });
        if let Some(m) = &self.macaroon {
            req.metadata_mut().insert("macaroon", m.clone());
        }
        req
    }

    async fn call(&self) -> Result<(), tonic::Status> {
        match self.mode {
            Mode::Echo => {
                let mut req = tonic::Request::new(EchoRequest {
                    message: self.payload.clone(),
                    ..Default::default()
                });
                if let Some(m) = &self.macaroon {
                    req.metadata_mut().insert("macaroon", m.clone());
                }
                EchoClient::new(self.channel.clone()).unary(req).await?;
            }
            Mode::Add => {
                AutopilotClient::new(self.channel.clone())
                    .add_autopilot_session(self.add_request())
                    .await?;
            }
            Mode::AddAlias => {
                let mut grpc = tonic::client::Grpc::new(self.channel.clone());
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(format!("not ready: {e}")))?;
                let codec = tonic_prost::ProstCodec::<
                    AddAutopilotSessionRequest,
                    AddAutopilotSessionResponse,
                >::default();
                let path = http::uri::PathAndQuery::from_static(BENCH_ADD_ALIAS);
                grpc.unary(self.add_request(), path, codec).await?;
            }
        }
        Ok(())
    }
}

/// Runs `total` calls with `concurrency` in flight; returns each call's latency and the
/// number of failed calls (with the first failure).
async fn run(
    caller: &Caller,
    concurrency: usize,
    total: usize,
) -> (Vec<Duration>, usize, Option<String>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (caller, next) = (caller.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total / concurrency.max(1) + 1);
            let (mut errors, mut first) = (0usize, None);
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                let r = caller.call().await;
                lat.push(t.elapsed());
                if let Err(e) = r {
                    errors += 1;
                    first.get_or_insert_with(|| format!("{:?}: {}", e.code(), e.message()));
                }
            }
            (lat, errors, first)
        }));
    }
    let (mut all, mut errors, mut first) = (Vec::with_capacity(total), 0, None);
    for t in tasks {
        match t.await {
            Ok((lat, e, f)) => {
                all.extend(lat);
                errors += e;
                if first.is_none() {
                    first = f;
                }
            }
            Err(e) => {
                errors += 1;
                first.get_or_insert_with(|| format!("task failed: {e}"));
            }
        }
    }
    (all, errors, first, start.elapsed())
}

/// Nearest-rank percentile of sorted microsecond values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let pem = std::fs::read(&args.cert)?;
    // Pinned exactly, as litcli pins litd's lnd-shaped tls.cert.
    let tls = litgate::tls::pinned::pem_client_config(&pem)?;
    let ep = Endpoint::from_shared(args.target.replacen("https://", "http://", 1))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3));
    let channel = litgate::tls::pinned::tonic_channel(ep, tls);
    let macaroon = match &args.macaroon_file {
        Some(p) => Some(std::fs::read_to_string(p)?.trim().parse()?),
        None => None,
    };
    if matches!(args.mode, Mode::Add | Mode::AddAlias) && macaroon.is_none() {
        return Err("--mode add and add-alias need --macaroon-file".into());
    }
    let caller = Caller {
        channel,
        mode: args.mode,
        macaroon,
        payload: "x".repeat(args.payload),
    };

    let (_, werr, wfirst, _) = run(&caller, args.concurrency, args.warmup).await;
    if werr > 0 {
        return Err(format!("{werr} warmup calls failed; first: {wfirst:?}").into());
    }
    let (lat, errors, first, wall) = run(&caller, args.concurrency, args.calls).await;
    let mut us: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let mean = us.iter().sum::<f64>() / us.len().max(1) as f64;
    let out = serde_json::json!({
        "mode": args.mode.to_possible_value().map(|v| v.get_name().to_string()),
        "target": args.target,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "count": us.len(),
        "errors": errors,
        "first_error": first,
        "median_us": pct(&us, 0.5),
        "p90_us": pct(&us, 0.9),
        "p99_us": pct(&us, 0.99),
        "mean_us": mean,
        "throughput_cps": us.len() as f64 / wall.as_secs_f64(),
        "wall_s": wall.as_secs_f64(),
    });
    println!("{out}");
    if errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}
