//! The command line: `run`, `check-config`, `demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// litgate: an autopilot registration proxy sidecar for Lightning Terminal (litd).
#[derive(Debug, Parser)]
#[command(name = "litgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run litgate in front of litd (the main job).
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file: prints `ok` (exit 0) or each error on its own line (exit 2).
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a demo litd and a demo Autopilot server in-process with litgate in front, and print
    /// example calls.
    Demo,
    /// Print the registration ledger of a running litgate as a table (from its admin listener).
    Registrations {
        /// The admin listener, `host:port` (`[admin] addr`).
        #[arg(long, default_value = "127.0.0.1:9445")]
        admin: String,
    },
}
