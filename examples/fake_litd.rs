//! A standalone fake litd and fake Autopilot server, for end-to-end load runs against a
//! separately started `litgate run` (see `benches/load.sh`).
//!
//! Starts `litgate::demo::DemoAutopilot` (plaintext h2c) and `litgate::demo::DemoLitd` (TLS,
//! self-signed for `localhost`/`127.0.0.1`) whose autopilot client registers directly with that
//! fake Autopilot server, writes `DIR/tls.cert`, `DIR/lit.macaroon` and `DIR/lit.macaroon.hex`,
//! prints the addresses and runs until killed (SIGTERM) or interrupted (Ctrl-C). The fakes keep
//! every session and recorded request in memory; that is fine for a bounded run, and
//! `--forget-every` drops the recorded requests periodically for long ones (the comparison
//! benchmark, `benches/compare/`). `--plaintext` serves h2c (litd's `--insecure-httplisten`)
//! instead of TLS; no `tls.cert` is written then. AddAutopilotSession is also served at
//! `litgate::demo::litd::BENCH_ADD_ALIAS`, a path litgate forwards without its policy, so a
//! benchmark can compare the intercepted call with the same call passed through.
//!
//! ```sh
//! cargo run --release --example fake_litd -- \
//!     --litd-addr 127.0.0.1:18443 --autopilot-addr 127.0.0.1:18010 --dir /tmp/fake-litd
//! ```

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use litgate::demo::{
    AutopilotTarget, DemoAutopilot, DemoAutopilotConfig, DemoLitd, DemoLitdConfig,
};

/// Fake litd (TLS) + fake Autopilot server (plaintext) on loopback.
#[derive(Parser, Debug)]
struct Args {
    /// Where the fake litd listens (TLS); port 0: the OS chooses.
    #[arg(long, default_value = "127.0.0.1:0")]
    litd_addr: SocketAddr,
    /// Where the fake Autopilot server listens (plaintext gRPC); port 0: the OS chooses.
    #[arg(long, default_value = "127.0.0.1:0")]
    autopilot_addr: SocketAddr,
    /// Directory for tls.cert, lit.macaroon and lit.macaroon.hex.
    #[arg(long)]
    dir: PathBuf,
    /// Serve the fake litd as h2c + HTTP/1.1 without TLS.
    #[arg(long)]
    plaintext: bool,
    /// Forget the requests the fake litd records this often (e.g. "1s"); never by default.
    #[arg(long, value_parser = humantime::parse_duration)]
    forget_every: Option<Duration>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let autopilot = DemoAutopilot::start(DemoAutopilotConfig {
        tls: false,
        addr: Some(args.autopilot_addr),
    })?;
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: !args.plaintext,
        autopilot: Some(AutopilotTarget {
            addr: autopilot.addr(),
            tls_cert_pem: None,
        }),
        addr: Some(args.litd_addr),
        // The benchmarks' passthrough twin of AddAutopilotSession (`--mode add-alias`).
        bench_alias: true,
    })?;
    let litd = Arc::new(litd);
    let (cert, mac) = litd.write_files(&args.dir)?;
    let mac_hex = args.dir.join("lit.macaroon.hex");
    litd.write_macaroon_hex(&mac_hex)?;
    println!(
        "litd={} autopilot={} cert={} macaroon={} macaroon_hex={}",
        litd.addr(),
        autopilot.addr(),
        cert.display(),
        mac.display(),
        mac_hex.display()
    );
    if let Some(every) = args.forget_every {
        let litd = litd.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                litd.clear_received();
            }
        });
    }
    // SIGTERM keeps its default action (the process ends); Ctrl-C stops the fakes first.
    tokio::signal::ctrl_c().await?;
    litd.shutdown().await;
    autopilot.shutdown().await;
    Ok(())
}
