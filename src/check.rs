//! `litgate check-config`: the configuration file, then every file it names, as `nginx -t` and
//! `envoy --mode validate` do, so that `run` does not fail on the first missing file and then,
//! once that is fixed, on the next. Sits beside the loader (`config`), which checks the text
//! alone; this module reads what the text points at. It never changes anything: it opens no
//! database, writes no certificate, takes no lock it keeps; the one thing it writes is an empty
//! probe file that it removes at once, to prove a directory is writable. It never prints file
//! contents (keys, macaroons).
//!
//! What is checked:
//! - `listen.tls_cert` / `listen.tls_key`: each loads as PEM, and the key is the certificate's.
//!   Without them, a pair already generated in `store.data_dir` is checked the same way, and a
//!   name in `listen.tls_extra_names` it lacks is a warning (`run` will generate a new pair).
//! - `upstream.tls_cert`: loads as a PEM certificate. A missing file is a **warning**, not an
//!   error: as a native sidecar litgate starts before litd writes it, and reads it at the first
//!   connection.
//! - `upstream.macaroon`, when set: hex text or litd's binary file, and a macaroon.
//! - `autopilot.tls_cert`, when set: loads as a PEM certificate.
//! - `store.data_dir`: a writable directory, or one that can be created (its nearest existing
//!   parent is a writable directory); its `db` is absent, empty, or a litgate store of this
//!   schema (marker file only: sled is not opened, so corruption inside it is found by `run`);
//!   a store a running litgate holds is a warning.

use std::{
    io,
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::{
    config::{Config, ConfigError},
    store::{Inspected, Store},
    tls::{self, PairError},
};

/// What the file checks found: errors fail the check, warnings do not.
#[derive(Debug, Default)]
pub struct Findings {
    /// Problems `run` would fail on.
    pub errors: Vec<ConfigError>,
    /// Worth knowing, but `run` would start.
    pub warnings: Vec<ConfigError>,
}

impl Findings {
    fn error(&mut self, key: &str, reason: String) {
        self.errors.push(ConfigError {
            key: key.into(),
            reason,
        });
    }

    fn warning(&mut self, key: &str, reason: String) {
        self.warnings.push(ConfigError {
            key: key.into(),
            reason,
        });
    }
}

/// `litgate check-config`: loads `path` (every error in it), then, unless `skip_files`, checks
/// the files it names. Prints each error on its own line, then each warning as `warning: ...`,
/// then `ok` if there was no error. Exit 0, or 2 on any error.
pub fn run(path: &Path, skip_files: bool) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs.0 {
                println!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    let found = if skip_files {
        Findings::default()
    } else {
        check_files(&cfg)
    };
    for e in &found.errors {
        println!("{e}");
    }
    for w in &found.warnings {
        println!("warning: {w}");
    }
    if found.errors.is_empty() {
        println!("ok");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// Checks every file `cfg` names (see the module text); collects every problem.
pub fn check_files(cfg: &Config) -> Findings {
    let mut found = Findings::default();
    listen_pair(cfg, &mut found);
    if !cfg.upstream.plaintext {
        match tls::load_certs(&cfg.upstream.tls_cert) {
            Ok(_) => {}
            Err(tls::TlsError::Io { path, source }) if source.kind() == io::ErrorKind::NotFound => {
                found.warning(
                    "upstream.tls_cert",
                    format!(
                        "{} does not exist yet; fine if litd has not started (litgate reads it \
                         at its first connection to litd)",
                        path.display()
                    ),
                )
            }
            Err(e) => found.error("upstream.tls_cert", e.to_string()),
        }
    }
    let mac = &cfg.upstream.macaroon;
    if !mac.as_os_str().is_empty() {
        if let Err(e) = crate::macaroon::read_file_hex(mac) {
            found.error("upstream.macaroon", format!("{}: {e}", mac.display()));
        }
    }
    let ap = &cfg.autopilot;
    if !ap.plaintext && !ap.tls_cert.as_os_str().is_empty() {
        if let Err(e) = tls::load_certs(&ap.tls_cert) {
            found.error("autopilot.tls_cert", e.to_string());
        }
    }
    data_dir(&cfg.store.data_dir, &mut found);
    found
}

/// The public face's pair: the operator's files, or the pair generated in the data directory.
fn listen_pair(cfg: &Config, found: &mut Findings) {
    let listen = &cfg.listen;
    if listen.plaintext {
        return;
    }
    if !listen.tls_cert.as_os_str().is_empty() {
        for e in tls::check_pair(&listen.tls_cert, &listen.tls_key)
            .err()
            .unwrap_or_default()
        {
            match e {
                PairError::Cert(e) => found.error("listen.tls_cert", e.to_string()),
                PairError::Key(e) => found.error("listen.tls_key", e.to_string()),
                PairError::Mismatch => found.error(
                    "listen.tls_key",
                    format!(
                        "{} is not the key of listen.tls_cert ({})",
                        listen.tls_key.display(),
                        listen.tls_cert.display()
                    ),
                ),
            }
        }
        return;
    }
    let (cert, key) = (
        cfg.store.data_dir.join("tls.cert"),
        cfg.store.data_dir.join("tls.key"),
    );
    if !(cert.exists() && key.exists()) {
        return; // `run` generates a new pair.
    }
    if let Err(errs) = tls::check_pair(&cert, &key) {
        for e in errs {
            found.error("store.data_dir", format!("the generated pair: {e}"));
        }
        return;
    }
    let missing = tls::load_certs(&cert)
        .map(|certs| tls::missing_names(&certs, &listen.tls_extra_names))
        .unwrap_or_default();
    if !missing.is_empty() {
        found.warning(
            "listen.tls_extra_names",
            format!(
                "{} lacks {}; litgate run will generate a new pair (clients must pin the new file)",
                cert.display(),
                missing.join(", ")
            ),
        );
    }
}

/// `store.data_dir`: usable as the store's home.
fn data_dir(dir: &Path, found: &mut Findings) {
    const KEY: &str = "store.data_dir";
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return found.error(KEY, format!("{} is not a directory", dir.display()));
        }
        Ok(_) => {
            if let Err(e) = probe_writable(dir) {
                return found.error(KEY, format!("{} is not writable: {e}", dir.display()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = dir.ancestors().skip(1).find(|a| a.exists());
            let usable = match parent {
                Some(p) if p.is_dir() => probe_writable(p).map_err(|e| (p.to_path_buf(), e)),
                Some(p) => Err((p.to_path_buf(), io::Error::other("not a directory"))),
                None => Err((PathBuf::from("/"), io::Error::other("no existing parent"))),
            };
            if let Err((p, e)) = usable {
                found.error(
                    KEY,
                    format!(
                        "{} does not exist and cannot be created in {}: {e}",
                        dir.display(),
                        p.display()
                    ),
                );
            }
            return;
        }
        Err(e) => return found.error(KEY, format!("{}: {e}", dir.display())),
    }
    match Store::inspect(dir) {
        Ok(Inspected::New | Inspected::Ours) => {}
        Ok(Inspected::InUse) => found.warning(
            KEY,
            format!(
                "the store in {} is held by a running litgate; another litgate here would be \
                 refused until it stops",
                dir.display()
            ),
        ),
        Err(e) => found.error(KEY, e.to_string()),
    }
}

/// Creates and removes an empty file in `dir`.
fn probe_writable(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!(".litgate-check-config-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}
