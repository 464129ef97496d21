//! Logging set-up (`[log]`): `tracing` to stderr as text or JSON, the optional access log, and
//! the start-up line. Credentials never reach a log line: no layer records header values, and
//! credential types redact their `Debug`. Colour codes only go to a terminal; JSON lines carry
//! plain values and each span once.

pub(crate) mod config;
pub(crate) mod metrics;
pub(crate) mod process;

use std::{io::IsTerminal, net::SocketAddr, path::Path, sync::OnceLock};

use tracing_subscriber::{filter::Directive, fmt::MakeWriter, EnvFilter};

use self::config::{check_filter, Format, LogConfig};

/// The target of access-log lines (`[log] access`); the filter turns it on or off whatever
/// `level` says.
pub(crate) const ACCESS_TARGET: &str = "litgate::access";

/// Installs the global subscriber, writing to stderr (with colour only when stderr is a
/// terminal and `NO_COLOR` is unset). `RUST_LOG`, when set to a valid filter, overrides
/// `level`. Calling it twice is harmless (the second call is ignored), so tests and the demo
/// can share it.
pub fn init(cfg: &LogConfig) {
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let env = std::env::var("RUST_LOG").ok();
    let (filter, refused) = filter(cfg, env.as_deref());
    let (sub, set_filter) = subscriber(cfg.format, filter, ansi, std::io::stderr);
    if tracing::subscriber::set_global_default(sub).is_ok() {
        let _ = SET_FILTER.set(set_filter);
    }
    if let Some(e) = refused {
        tracing::warn!(error = %e, "RUST_LOG ignored; using [log] level");
    }
}

/// Replaces the global subscriber's filter (installed by [`init`]).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The filter of the subscriber [`init`] installed; unset when another one is global (tests).
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Applies a reloaded `[log] level` and `access` to the installed subscriber, from the next
/// event on (`RUST_LOG`, when set and valid, still wins, as at start). `format` needs a
/// restart. Returns false when litgate's subscriber is not the global one (nothing to swap).
pub(crate) fn reload_filter(cfg: &LogConfig) -> bool {
    let Some(set) = SET_FILTER.get() else {
        return false;
    };
    let env = std::env::var("RUST_LOG").ok();
    let (filter, _) = filter(cfg, env.as_deref());
    match set(filter) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "cannot swap the log filter");
            false
        }
    }
}

/// The filter: `RUST_LOG` if set and valid (else `level`, and why `RUST_LOG` was refused),
/// with the access-log target on or off as `[log] access` says.
fn filter(cfg: &LogConfig, rust_log: Option<&str>) -> (EnvFilter, Option<String>) {
    let (text, refused) = match rust_log {
        Some(env) => match check_filter(env) {
            Ok(()) => (env, None),
            Err(e) => (cfg.level.as_str(), Some(e)),
        },
        None => (cfg.level.as_str(), None),
    };
    let filter = EnvFilter::builder()
        .parse(text)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let access = if cfg.access { "info" } else { "off" };
    let filter = match format!("{ACCESS_TARGET}={access}").parse::<Directive>() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    (filter, refused)
}

/// The subscriber for `format`, writing to `writer`, and the handle that swaps its filter.
fn subscriber<W>(
    format: Format,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> (Box<dyn tracing::Subscriber + Send + Sync>, SetFilter)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        Format::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            (
                Box::new(builder.finish()),
                Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())),
            )
        }
        // The span list names every span the event is in, the current one included; the
        // current span again on its own would say it twice.
        Format::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            (
                Box::new(builder.finish()),
                Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())),
            )
        }
    }
}

/// The operator's start-up line, at `info`: version, commit, the config file and every
/// listening address (the stdout line `litgate listening ...` is for scripts).
pub fn log_started(
    config: Option<&Path>,
    public: SocketAddr,
    admin: SocketAddr,
    relay: Option<SocketAddr>,
    upstream: &str,
) {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = crate::version::GIT_COMMIT,
        config = %config.map_or_else(|| "(built in code)".into(), |p| p.display().to_string()),
        public = %public,
        admin = %admin,
        relay = %relay.map_or_else(|| "off".to_string(), |a| a.to_string()),
        upstream,
        "litgate started"
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buf {
        type Writer = Buf;
        fn make_writer(&'w self) -> Buf {
            self.clone()
        }
    }

    pub(crate) fn capture(cfg: &LogConfig, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let (filter, _) = filter(cfg, None);
        let (sub, _) = subscriber(cfg.format, filter, false, buf.clone());
        tracing::subscriber::with_default(sub, f);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_swapped_filter_applies_to_the_next_event_in_either_format() {
        for format in [Format::Text, Format::Json] {
            let warn = LogConfig {
                level: "warn".into(),
                format,
                access: false,
            };
            let debug = LogConfig {
                level: "debug".into(),
                ..warn.clone()
            };
            let buf = Buf::default();
            let (sub, set_filter) = subscriber(format, filter(&warn, None).0, false, buf.clone());
            tracing::subscriber::with_default(sub, || {
                tracing::info!("before the swap");
                set_filter(filter(&debug, None).0).unwrap();
                tracing::debug!("after the swap");
            });
            let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert!(!out.contains("before the swap"), "{out}");
            assert!(out.contains("after the swap"), "{out}");
        }
    }

    #[test]
    fn json_lines_carry_plain_values_and_each_span_once() {
        let cfg = LogConfig {
            level: "debug".into(),
            format: Format::Json,
            access: false,
        };
        let out = capture(&cfg, || {
            let span = tracing::debug_span!("request", path = "/x");
            let _e = span.enter();
            log_started(
                Some(Path::new("/etc/litgate.toml")),
                "127.0.0.1:8445".parse().unwrap(),
                "127.0.0.1:9445".parse().unwrap(),
                Some("127.0.0.1:12010".parse().unwrap()),
                "127.0.0.1:8443",
            );
        });
        let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(line["relay"], "127.0.0.1:12010", "{out}");
        assert_eq!(line["config"], "/etc/litgate.toml");
        assert_eq!(line["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(line["commit"], crate::version::GIT_COMMIT);
        assert!(
            line.get("span").is_none(),
            "the span once, in the list: {out}"
        );
        assert_eq!(line["spans"][0]["path"], "/x");
        assert!(!out.contains("Some("), "{out}");
    }

    #[test]
    fn the_access_target_follows_the_access_key_not_the_level() {
        let event = || tracing::info!(target: ACCESS_TARGET, route = "x", "call");
        let mut cfg = LogConfig {
            level: "warn".into(),
            ..LogConfig::default()
        };
        cfg.access = true;
        assert!(capture(&cfg, event).contains("route=\"x\""));
        cfg.level = "debug".into();
        cfg.access = false;
        assert_eq!(capture(&cfg, event), "");
    }

    #[test]
    fn a_refused_rust_log_falls_back_to_the_level() {
        let cfg = LogConfig::default();
        let (f, refused) = filter(&cfg, Some("warning"));
        assert!(refused.unwrap().contains("\"warning\" names no level"));
        assert!(f.to_string().ends_with(",info"), "{f}");
        let (f, refused) = filter(&cfg, Some("debug"));
        assert!(refused.is_none());
        assert!(f.to_string().contains("debug"), "{f}");
    }
}
