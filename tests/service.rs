//! The binary under a service manager: systemd's readiness protocol on a real `NOTIFY_SOCKET`
//! (`READY=1` once serving, `RELOADING=1`/`READY=1` around SIGHUP, `STOPPING=1` at the drain).

mod common;

use std::{os::unix::net::UnixDatagram, time::Duration};

use common::*;
use litgate::demo::{DemoLitd, DemoLitdConfig};

/// Receives the next datagram (bounded wait), as text.
fn next_message(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the read timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A datagram socket in `dir` standing in for systemd's, with a bounded read timeout.
fn notify_socket(dir: &std::path::Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    (sock, path)
}

#[tokio::test]
async fn notifies_ready_once_serving_then_stopping_on_sigterm() {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = notify_socket(dir.path());
    let bin = Binary::prepare(dir.path(), &litd, "");
    let Spawned { child, public, .. } = bin
        .spawn_with_env("stderr.log", &[("NOTIFY_SOCKET", path.as_os_str())])
        .await;

    let sock = std::sync::Arc::new(sock);
    let s = sock.clone();
    let first = tokio::task::spawn_blocking(move || next_message(&s))
        .await
        .unwrap();
    assert_eq!(first.lines().collect::<Vec<_>>(), ["READY=1"]);
    // READY means serving: a connection is accepted right away.
    tokio::net::TcpStream::connect(public)
        .await
        .expect("serving once READY=1 is sent");

    sigterm(&child);
    let s = sock.clone();
    let next = tokio::task::spawn_blocking(move || next_message(&s))
        .await
        .unwrap();
    assert_eq!(next.lines().collect::<Vec<_>>(), ["STOPPING=1"]);
    stop_cleanly_after_signal(child).await;
    litd.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_refuses_a_bad_config_and_the_process_keeps_serving() {
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (sock, path) = notify_socket(dir.path());
    let sock = std::sync::Arc::new(sock);
    let next = || {
        let s = sock.clone();
        async move {
            tokio::task::spawn_blocking(move || next_message(&s))
                .await
                .unwrap()
        }
    };
    let bin = Binary::prepare(dir.path(), &litd, "");
    let Spawned {
        child,
        public,
        admin,
    } = bin
        .spawn_with_env("stderr.log", &[("NOTIFY_SOCKET", path.as_os_str())])
        .await;
    assert_eq!(next().await.trim(), "READY=1");

    // A bad file: refused, logged with its key, counted; litgate keeps serving.
    std::fs::write(
        &bin.config,
        config_toml(dir.path(), &litd, "[log]\nlevel = \"warning\"\n"),
    )
    .unwrap();
    sighup(&child);
    let reloading = next().await;
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next().await.trim(), "READY=1");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("config reload refused"), "{log}");
    assert!(log.contains("log.level"), "{log}");
    let (_, text) = admin_get(&format!("http://{admin}/metrics")).await;
    assert_eq!(
        metric_labelled(&text, "litgate_config_reloads_total", "outcome=\"failed\""),
        1.0
    );
    tokio::net::TcpStream::connect(public)
        .await
        .expect("still serving after a refused reload");

    // A good one: reloaded, with what changed and what needs a restart named.
    std::fs::write(
        &bin.config,
        config_toml(
            dir.path(),
            &litd,
            "[cache]\nttl = \"7s\"\n[rate_limit]\nenabled = false\n[log]\nformat = \"json\"\n",
        ),
    )
    .unwrap();
    sighup(&child);
    assert!(next().await.starts_with("RELOADING=1"));
    assert_eq!(next().await.trim(), "READY=1");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("config reloaded"))
        .unwrap_or_else(|| panic!("no reload line: {log}"));
    assert!(
        line.contains("changed=rate_limit,cache.ttl,listen.tls_reread "),
        "{line}"
    );
    assert!(line.contains("needs_restart=log.format"), "{line}");
    assert!(
        log.lines()
            .any(|l| l.contains("need a restart") && l.contains("log.format")),
        "{log}"
    );
    let (_, text) = admin_get(&format!("http://{admin}/metrics")).await;
    assert_eq!(
        metric_labelled(&text, "litgate_config_reloads_total", "outcome=\"ok\""),
        1.0
    );

    sigterm(&child);
    assert_eq!(next().await.trim(), "STOPPING=1");
    stop_cleanly_after_signal(child).await;
    litd.shutdown().await;
}

/// Sends `child` SIGHUP (reload).
fn sighup(child: &std::process::Child) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits for `child`, already signalled, to exit 0.
async fn stop_cleanly_after_signal(mut child: std::process::Child) {
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
