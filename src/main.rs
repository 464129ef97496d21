#![forbid(unsafe_code)]
//! The `litgate` binary: parse the command line, load config, start telemetry, build the app
//! on its runtimes (`[runtime] threads`, `litgate::runtime`), serve (reloading on SIGHUP)
//! until SIGTERM/SIGINT, drain, exit. Allocates with mimalloc (the default feature `mimalloc`):
//! HTTP/2 forwarding moves many small futures and frames.

use std::process::ExitCode;

use clap::Parser;
use litgate::{cli, config::Config, telemetry};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let ran = litgate::runtime::block_on(async move {
        match cli.command {
            cli::Command::CheckConfig { config, skip_files } => {
                litgate::check::run(&config, skip_files)
            }
            cli::Command::Run { config } => {
                let cfg = match Config::load(&config) {
                    Ok(c) => c,
                    Err(errs) => {
                        for e in &errs.0 {
                            eprintln!("{}: {e}", config.display());
                        }
                        return ExitCode::from(2);
                    }
                };
                telemetry::init(&cfg.log);
                let mut signals = litgate::reload::Signals::install();
                let running = match litgate::runtime::start(&cfg).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "litgate could not start");
                        eprintln!("litgate could not start: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                // One stable line for whoever started the process (supervisors, tests): where
                // each listener is bound, port 0 resolved.
                println!(
                    "litgate listening public={} admin={} relay={}",
                    running.public_addr,
                    running.admin_addr,
                    running
                        .relay_addr
                        .map_or_else(|| "off".to_string(), |a| a.to_string())
                );
                if let Some(p) = &running.cert_path {
                    if running.cert_generated {
                        tracing::info!(path = %p.display(), "generated a self-signed certificate for the public face; clients pin this file");
                    }
                }
                litgate::notify::ready();
                signals.serve_until_stopped(&running.reloader()).await;
                litgate::notify::stopping();
                tracing::info!("shutting down: draining in-flight calls");
                running.shutdown().await;
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            cli::Command::Demo => litgate::demo::run().await,
            cli::Command::Init(args) => litgate::init::run(&args),
            cli::Command::Completions { shell } => cli::print_completions(shell),
            cli::Command::Registrations { admin } => {
                match litgate::admin::fetch_registrations(&admin).await {
                    Ok(table) => {
                        print!("{table}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    });
    ran.unwrap_or_else(|e| {
        eprintln!("cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}
