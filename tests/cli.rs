//! The binary: `check-config` (exit codes, one error per line, every key of the shipped file
//! accepted) and `run` draining an in-flight call on SIGTERM before exiting 0.

mod common;

use std::process::Command;

use common::*;
use litgate::{
    demo::{DemoLitd, DemoLitdConfig},
    proto::litgatetest::{echo_client::EchoClient, EchoRequest},
};

const BIN: &str = env!("CARGO_BIN_EXE_litgate");

fn check_config(path: &std::path::Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn shipped_config_is_ok() {
    let (code, out) = check_config(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/litgate.toml"
    )));
    assert_eq!((code, out.as_str()), (0, "ok\n"));
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
