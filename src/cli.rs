//! The command line: `run`, `check-config`, `demo`, `registrations`, `init`, `completions`.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

/// litgate: an autopilot registration proxy sidecar for Lightning Terminal (litd).
#[derive(Debug, Parser)]
#[command(name = "litgate", version = crate::version::LONG, about)]
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
    /// Validate a configuration file and every file it names (certificates, keys, the
    /// macaroon, the data directory): prints each error on its own line (exit 2), then each
    /// warning (`warning: ...`), then `ok` when there was no error (exit 0).
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Check the file alone, not the files it names (CI, image builds: where those files
        /// do not exist).
        #[arg(long)]
        skip_files: bool,
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
    /// Write a litgate.toml for an existing litd (from its --lit-dir) and print the litd flags
    /// to change.
    Init(crate::init::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Prints the completion script for `shell` (`litgate completions SHELL`). The script is built
/// in memory first: clap_complete panics on a failed write, and a closed pipe (`| head`) is no
/// reason to panic.
pub fn print_completions(shell: clap_complete::Shell) -> std::process::ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "litgate", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &script) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("litgate completions: cannot write to stdout: {e}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
