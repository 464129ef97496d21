//! `litgate init --lit-dir DIR`: from "I run litd" to "litgate in front" in one command. It
//! reads litd's directory the way litd lays it out (`lit.conf`, `tls.cert`,
//! `<network>/lit.macaroon`), writes a `litgate.toml` with the upstream and relay filled in and
//! every other key commented out as in the shipped `config/litgate.toml`, checks that file with
//! the loader `check-config` uses, and prints the litd flags to change, each with its reason.
//!
//! It sits outside the request path: a one-shot command of the binary. Parsing (`LitConf`),
//! deciding (`plan`) and rendering (`render`) are pure functions; only `run` touches the disk.
//! It never changes litd's files, never overwrites a file without `--force`, and never reads a
//! macaroon's contents (it only checks that the file is there).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::config::{AutopilotConfig, Config, RelayConfig};

/// The shipped configuration, every key with its default and meaning: the template `init`
/// fills in, so its comments are the documentation of the file it writes.
pub const TEMPLATE: &str = include_str!("../../config/litgate.toml");

/// litd's file names and defaults (Lightning Terminal's `config.go`).
mod litd {
    /// litd's configuration file, in the lit dir.
    pub const CONFIG_FILE: &str = "lit.conf";
    /// litd's TLS certificate for `httpslisten`, in the lit dir (`tlscertpath`).
    pub const TLS_CERT: &str = "tls.cert";
    /// litd's own macaroon, in `<lit dir>/<network>/` (`macaroonpath`).
    pub const MACAROON: &str = "lit.macaroon";
    /// `httpslisten` when unset.
    pub const HTTPS_LISTEN: &str = "127.0.0.1:8443";
    /// `network` when unset.
    pub const NETWORK: &str = "mainnet";
    /// The networks litd accepts (`--network` choices).
    pub const NETWORKS: &[&str] = &[
        "mainnet", "testnet", "testnet4", "regtest", "simnet", "signet",
    ];
    /// The Autopilot server litd dials on testnet when `autopilot.address` is unset (mainnet's is
    /// litgate's own default, `AutopilotConfig::default().server`).
    pub const TESTNET_AUTOPILOT: &str = "test.autopilot.lightning.finance:12010";
}

/// The command line of `litgate init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// litd's directory (its `--lit-dir`; litd's default is `~/.lit`).
    #[arg(long)]
    pub lit_dir: PathBuf,
    /// litd's network; default: `network` from lit.conf, else mainnet.
    #[arg(long)]
    pub network: Option<String>,
    /// Where to write litgate's configuration.
    #[arg(long, short, default_value = "litgate.toml")]
    pub config: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Why `init` could not write a configuration. Every case is the operator's to fix (or litd's
/// directory not being what it should), except `Invalid`, which is litgate's own bug.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `lit.conf` has a line that is neither a comment, a section nor `key=value`.
    #[error("{path}:{line}: not `key=value`, a [section] or a comment: {text:?}")]
    LitConf {
        /// lit.conf's path.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// What litd's directory or lit.conf says cannot be turned into a litgate config.
    #[error("{0}")]
    Unsupported(String),
    /// The output exists and `--force` was not given.
    #[error("{0} exists; pass --force to overwrite it")]
    Exists(PathBuf),
    /// The written file does not pass `check-config`: a bug in `init`.
    #[error("the written {path} does not pass check-config (a litgate bug): {errors}")]
    Invalid {
        /// The written file.
        path: PathBuf,
        /// The loader's errors.
        errors: String,
    },
}

/// `lit.conf` as litd's INI parser (go-flags) reads it: `key=value` lines, `#` and `;` comment
/// lines (no comments after a value), optional `[section]` lines, quoted values unquoted. Keys
/// are kept with their namespace (`autopilot.address`); a key under a section other than
/// `[Application Options]` gets the section's name as namespace. For a repeated key the last
/// value wins, as it does for litd's single-valued options.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LitConf {
    values: BTreeMap<String, String>,
}

impl LitConf {
    /// Parses the text of a lit.conf; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, InitError> {
        let mut values = BTreeMap::new();
        let mut namespace = String::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let section = section.trim().to_ascii_lowercase();
                namespace = if section == "application options" {
                    String::new()
                } else {
                    format!("{section}.")
                };
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(InitError::LitConf {
                    path: path.to_path_buf(),
                    line: i + 1,
                    text: raw.to_string(),
                });
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            values.insert(format!("{namespace}{key}"), value.to_string());
        }
        Ok(Self { values })
    }

    /// The value of `key` (lower case, with its namespace), if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// A boolean option: set without a value, or to true/1, means on.
    pub fn flag(&self, key: &str) -> bool {
        matches!(
            self.get(key).map(str::to_ascii_lowercase).as_deref(),
            Some("" | "true" | "1")
        )
    }
}

/// What `init` found in litd's directory: the input of [`plan`].
#[derive(Debug, Clone)]
pub struct Found {
    /// litd's directory.
    pub lit_dir: PathBuf,
    /// `--network` of `init`, if given.
    pub network: Option<String>,
    /// lit.conf, empty if the file does not exist.
    pub conf: LitConf,
    /// The home directory `~` in lit.conf's paths stands for.
    pub home: Option<PathBuf>,
}

/// A flag litd needs changed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LitdFlag {
    /// The flag as litd takes it on its command line.
    pub flag: String,
    /// One line: why.
    pub reason: String,
}

/// What `init` will write and tell: the output of [`plan`], the input of [`render`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// litd's network.
    pub network: String,
    /// Keys of litgate.toml to set (`section.key` to a TOML value), in file order.
    pub settings: Vec<(String, toml::Value)>,
    /// litd's flags to change.
    pub flags: Vec<LitdFlag>,
    /// Things the operator should know (a missing macaroon, a second listener, ...).
    pub notes: Vec<String>,
    /// litd's TLS certificate, which must exist.
    pub tls_cert: PathBuf,
    /// litd's macaroon, if litgate should use it.
    pub macaroon: Option<PathBuf>,
}

/// Decides the litgate settings and litd flags from what litd's directory holds. `exists` says
/// whether a file exists (the disk, in `run`; a set of names, in tests).
pub fn plan(found: &Found, exists: impl Fn(&Path) -> bool) -> Result<Plan, InitError> {
    let conf = &found.conf;
    let path = |value: &str| expand(value, &found.lit_dir, found.home.as_deref());
    let network = found
        .network
        .clone()
        .or_else(|| conf.get("network").map(str::to_string))
        .unwrap_or_else(|| litd::NETWORK.to_string());
    if !litd::NETWORKS.contains(&network.as_str()) {
        return Err(InitError::Unsupported(format!(
            "network {network:?} is not one of litd's: {}",
            litd::NETWORKS.join(", ")
        )));
    }
    if conf.flag("letsencrypt") {
        return Err(InitError::Unsupported(
            "lit.conf sets letsencrypt: litd serves a Let's Encrypt certificate, not a file in \
             its directory that litgate can pin. Let litgate take over the public name \
             (its [listen] tls_cert) and let litd generate its own tls.cert on loopback \
             (remove letsencrypt), then run init again"
                .into(),
        ));
    }
    let mut settings = Vec::new();
    let mut flags = Vec::new();
    let mut notes = Vec::new();
    let mut set = |key: &str, value: toml::Value| settings.push((key.to_string(), value));

    // litd's HTTPS listener: litgate forwards to its loopback side.
    let listen = conf.get("httpslisten").unwrap_or(litd::HTTPS_LISTEN);
    let (host, port) = crate::values::host_port(listen).ok_or_else(|| {
        InitError::Unsupported(format!("lit.conf: httpslisten {listen:?} is not host:port"))
    })?;
    let upstream = if is_loopback(host) {
        listen.to_string()
    } else {
        let upstream = format!("127.0.0.1:{port}");
        flags.push(LitdFlag {
            flag: format!("--httpslisten={upstream}"),
            reason: format!(
                "litd listens on {listen} today: litgate becomes the way in, litd stays on loopback"
            ),
        });
        upstream
    };
    set("upstream.addr", upstream.into());
    if let Some(plain) = conf.get("insecure-httplisten").filter(|v| !v.is_empty()) {
        notes.push(format!(
            "litd also serves plaintext HTTP on {plain} (insecure-httplisten): callers there \
             bypass litgate; remove it unless it is on loopback for a reason"
        ));
    }

    let tls_cert = conf
        .get("tlscertpath")
        .map(path)
        .unwrap_or_else(|| found.lit_dir.join(litd::TLS_CERT));
    if !exists(&tls_cert) {
        return Err(InitError::Unsupported(format!(
            "litd's certificate {} does not exist: start litd once (it writes tls.cert on first \
             start), or point --lit-dir at litd's directory",
            tls_cert.display()
        )));
    }
    set("upstream.tls_cert", path_value(&tls_cert));

    let macaroon = conf
        .get("macaroonpath")
        .map(path)
        .unwrap_or_else(|| found.lit_dir.join(&network).join(litd::MACAROON));
    let macaroon = if exists(&macaroon) {
        set("upstream.macaroon", path_value(&macaroon));
        Some(macaroon)
    } else {
        notes.push(format!(
            "no macaroon at {}: reconciliation stays off until [upstream] macaroon names one \
             (litd writes lit.macaroon on first start)",
            macaroon.display()
        ));
        None
    };

    // The Autopilot server: where litd registers today, unless that is already the relay.
    let relay = RelayConfig::default()
        .addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "127.0.0.1:12010".to_string());
    let current = conf
        .get("autopilot.address")
        .filter(|a| !a.is_empty() && *a != relay);
    let server = match (current, network.as_str()) {
        (Some(addr), _) => {
            if conf.flag("autopilot.insecure") {
                set("autopilot.plaintext", true.into());
                notes.push(format!(
                    "litd reaches the Autopilot server {addr} without TLS today; litgate does the same"
                ));
            }
            if let Some(pem) = conf.get("autopilot.tlspath").filter(|p| !p.is_empty()) {
                set("autopilot.tls_cert", path_value(&path(pem)));
            }
            addr.to_string()
        }
        (None, "mainnet") => AutopilotConfig::default().server,
        (None, "testnet") => litd::TESTNET_AUTOPILOT.to_string(),
        (None, other) => {
            return Err(InitError::Unsupported(format!(
                "on {other} there is no public Autopilot server: set autopilot.address in \
                 lit.conf to yours (litd needs it too), then run init again"
            )))
        }
    };
    settings.insert(
        settings
            .iter()
            .position(|(k, _)| k.starts_with("autopilot."))
            .unwrap_or(settings.len()),
        ("autopilot.server".into(), server.into()),
    );
    settings.push(("autopilot.relay.addr".into(), relay.clone().into()));
    if conf.get("autopilot.address") != Some(relay.as_str()) {
        flags.push(LitdFlag {
            flag: format!("--autopilot.address={relay}"),
            reason: "litd registers autopilot sessions through litgate's relay, which checks them"
                .into(),
        });
    }
    if !conf.flag("autopilot.insecure") {
        flags.push(LitdFlag {
            flag: "--autopilot.insecure".into(),
            reason: "the relay speaks plaintext, on loopback only".into(),
        });
    }
    if conf.flag("autopilot.disable") {
        notes.push(
            "lit.conf sets autopilot.disable: litd registers nothing, so the relay stays idle \
             until it is removed"
                .into(),
        );
    }
    Ok(Plan {
        network,
        settings,
        flags,
        notes,
        tls_cert,
        macaroon,
    })
}

/// The config file: [`TEMPLATE`] with the planned keys set and every other key commented out,
/// its explanations kept. `source` names where the values came from (the file's first line).
pub fn render(plan: &Plan, source: &str) -> String {
    let mut out = format!(
        "# Written by `litgate init` from litd's directory {source} (network {}).\n\
         # The keys set below were read from it; every other key is commented out at its\n\
         # default.\n#\n",
        plan.network
    );
    let mut section = String::new();
    // The template's first line says every key shows its default: not true of this file.
    for line in TEMPLATE
        .lines()
        .skip_while(|l| l.starts_with("# litgate configuration."))
    {
        if let Some(rest) = line.strip_prefix('[') {
            section = rest
                .split(']')
                .next()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_string();
            out.push_str(line);
        } else if let Some((key, value_and_comment)) = key_line(line) {
            let full = format!("{section}.{key}");
            match plan.settings.iter().find(|(k, _)| *k == full) {
                Some((_, value)) => {
                    // Keep the template's explanation, in its column where the value fits.
                    let comment = value_and_comment
                        .find(" #")
                        .map(|at| value_and_comment[at..].trim_start())
                        .unwrap_or_default();
                    let mut set = format!("{key} = {value}");
                    if !comment.is_empty() {
                        let column = (line.len() - comment.len()).max(set.len() + 1);
                        let _ = write!(set, "{:width$}{comment}", "", width = column - set.len());
                    }
                    out.push_str(&set);
                }
                None => {
                    out.push_str("# ");
                    out.push_str(line);
                }
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// What `init` prints: the keys it set, litd's flags to change, the notes.
pub fn report(plan: &Plan, written: &Path) -> String {
    let mut out = format!(
        "wrote {} (check-config: ok) for litd on {}:\n",
        written.display(),
        plan.network
    );
    let width = plan
        .settings
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (key, value) in &plan.settings {
        let _ = writeln!(out, "  {key:width$} = {value}");
    }
    for note in &plan.notes {
        let _ = writeln!(out, "note: {note}");
    }
    if plan.flags.is_empty() {
        out.push_str("\nlitd's flags need no change.\n");
    } else {
        out.push_str(
            "\nChange litd's flags (or the same keys, without the dashes, in lit.conf) and \
             restart litd:\n",
        );
        let width = plan.flags.iter().map(|f| f.flag.len()).max().unwrap_or(0);
        for f in &plan.flags {
            let _ = writeln!(out, "  {:width$}  # {}", f.flag, f.reason);
        }
    }
    let _ = write!(
        out,
        "\nThen start litgate: litgate run --config {}\nIt keeps its state in [store] data_dir \
         ({}): create it, writable by the user litgate runs as. Clients connect to litgate's \
         [listen] port and pin litgate's certificate instead of litd's.\n",
        written.display(),
        crate::config::StoreConfig::default().data_dir.display()
    );
    out
}

/// `litgate init`: plan, render, write (refusing to overwrite without `--force`), check with
/// [`Config::load`], print the report.
pub fn run(args: &Args) -> ExitCode {
    match write_config(args) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("litgate init: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_config(args: &Args) -> Result<String, InitError> {
    let conf_path = args.lit_dir.join(litd::CONFIG_FILE);
    let conf = match std::fs::read_to_string(&conf_path) {
        Ok(text) => LitConf::parse(&text, &conf_path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => LitConf::default(),
        Err(source) => {
            return Err(InitError::Io {
                path: conf_path,
                source,
            })
        }
    };
    let lit_dir = std::path::absolute(&args.lit_dir).map_err(|source| InitError::Io {
        path: args.lit_dir.clone(),
        source,
    })?;
    let found = Found {
        lit_dir: lit_dir.clone(),
        network: args.network.clone(),
        conf,
        home: std::env::var_os("HOME").map(PathBuf::from),
    };
    let plan = plan(&found, |p| p.is_file())?;
    let text = render(&plan, &lit_dir.display().to_string());

    let io = |source| InitError::Io {
        path: args.config.clone(),
        source,
    };
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    if args.force {
        open.create(true).truncate(true);
    } else {
        open.create_new(true);
    }
    let mut file = open.open(&args.config).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            InitError::Exists(args.config.clone())
        } else {
            io(e)
        }
    })?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    if let Err(errors) = Config::load(&args.config) {
        return Err(InitError::Invalid {
            path: args.config.clone(),
            errors: errors.to_string(),
        });
    }
    Ok(report(&plan, &args.config))
}

/// A `key = value...` line of the template (a key at the start of the line): the key and the
/// rest after `= `.
fn key_line(line: &str) -> Option<(&str, &str)> {
    let (key, rest) = line.split_once(" = ")?;
    (!key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .then_some((key, rest))
}

/// A path from lit.conf as litd resolves it: `~` is the home directory; a relative path is taken
/// from the lit dir (litd would take it from its working directory, which `init` cannot know).
fn expand(value: &str, lit_dir: &Path, home: Option<&Path>) -> PathBuf {
    match (value.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ if value == "~" => home.map(Path::to_path_buf).unwrap_or_else(|| value.into()),
        _ => lit_dir.join(value),
    }
}

fn path_value(p: &Path) -> toml::Value {
    toml::Value::String(p.display().to_string())
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests;
