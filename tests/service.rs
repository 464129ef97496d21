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
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    litd.shutdown().await;
}
