//! The binary under a service manager: systemd's readiness protocol on a real `NOTIFY_SOCKET`
//! (`READY=1` once serving, `RELOADING=1`/`READY=1` around SIGHUP, `STOPPING=1` at the drain).

mod common;

use std::{os::unix::net::UnixDatagram, sync::Arc, time::Duration};

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

/// A TLS demo litd and `litgate run` in front of it, told to notify a socket of its own.
struct Supervised {
    litd: DemoLitd,
    dir: tempfile::TempDir,
    bin: Binary,
    spawned: Spawned,
    sock: Arc<UnixDatagram>,
}

impl Supervised {
    async fn start() -> Supervised {
        let litd = DemoLitd::start(DemoLitdConfig {
            tls: true,
            ..Default::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (sock, path) = notify_socket(dir.path());
        let bin = Binary::prepare(dir.path(), &litd, "");
        let spawned = bin
            .spawn_with_env("stderr.log", &[("NOTIFY_SOCKET", path.as_os_str())])
            .await;
        Supervised {
            litd,
            dir,
            bin,
            spawned,
            sock: Arc::new(sock),
        }
    }

    /// The next notification (bounded wait), off the async workers.
    async fn next(&self) -> String {
        let s = self.sock.clone();
        tokio::task::spawn_blocking(move || next_message(&s))
            .await
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap()
    }

    /// Writes the config with `extra` tables and sends SIGHUP; returns once litgate says it
    /// is ready again.
    async fn reload_with(&self, extra: &str) {
        std::fs::write(
            &self.bin.config,
            config_toml(self.dir.path(), &self.litd, extra),
        )
        .unwrap();
        sighup(&self.spawned.child);
        let reloading = self.next().await;
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reloading}"
        );
        assert_eq!(self.next().await.trim(), "READY=1");
    }

    /// SIGTERM: STOPPING=1, then exit 0.
    async fn stop(self) {
        sigterm(&self.spawned.child);
        assert_eq!(self.next().await.trim(), "STOPPING=1");
        let mut child = self.spawned.child;
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(0));
        self.litd.shutdown().await;
    }
}

#[tokio::test]
async fn notifies_ready_once_serving_then_stopping_on_sigterm() {
    let s = Supervised::start().await;
    assert_eq!(s.next().await.lines().collect::<Vec<_>>(), ["READY=1"]);
    // READY means serving: a connection is accepted right away.
    tokio::net::TcpStream::connect(s.spawned.public)
        .await
        .expect("serving once READY=1 is sent");
    s.stop().await;
}

#[tokio::test]
async fn sighup_reloads_refuses_a_bad_config_and_the_process_keeps_serving() {
    let s = Supervised::start().await;
    assert_eq!(s.next().await.trim(), "READY=1");
    let admin = s.spawned.admin;

    // A bad file: refused, logged with its key, counted; litgate keeps serving.
    s.reload_with("[log]\nlevel = \"warning\"\n").await;
    let log = s.log();
    assert!(log.contains("config reload refused"), "{log}");
    assert!(log.contains("log.level"), "{log}");
    let (_, text) = admin_get(&format!("http://{admin}/metrics")).await;
    assert_eq!(
        metric_labelled(&text, "litgate_config_reloads_total", "outcome=\"failed\""),
        1.0
    );
    tokio::net::TcpStream::connect(s.spawned.public)
        .await
        .expect("still serving after a refused reload");

    // A good one: reloaded, with what changed and what needs a restart named.
    s.reload_with(
        "[cache]\nttl = \"7s\"\n[rate_limit]\nenabled = false\n[log]\nformat = \"json\"\n",
    )
    .await;
    let log = s.log();
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
    s.stop().await;
}

/// Sends `child` SIGHUP (reload).
fn sighup(child: &std::process::Child) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}
