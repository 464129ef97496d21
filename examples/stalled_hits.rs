//! What stalled session-list hits cost a running litgate's memory (issue 12 item 2's
//! measurement): starts a TLS fake litd holding `--sessions` sessions (1,000: a ~200 KB
//! `ListSessions` answer), a `litgate run` process from `--litgate`, primes the cache, then
//! opens `--stalled` calls in steps of `--step`, each on a connection of its own whose stream
//! window is 0, so litgate can send nothing and must hold whatever the answer costs it. After
//! each step (every stalled call has its response head, so litgate has produced its answer)
//! it prints litgate's `VmRSS` and the cache's replay metrics.
//!
//! `--credentials same`: every stalled call is a hit of one entry (one credential);
//! `distinct`: each uses its own attenuated copy of the macaroon, primed with one full read,
//! so each stalled call is a hit of an entry of its own (an attacker with one credential can
//! make as many copies as they like).
//!
//! ```sh
//! cargo build --bin litgate --example stalled_hits
//! target/debug/examples/stalled_hits --litgate target/debug/litgate --stalled 150
//! ```

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use bytes::Bytes;
use clap::Parser;
use litgate::demo::{attenuate, DemoLitd, DemoLitdConfig};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const LIST: &str = "/litrpc.Sessions/ListSessions";

#[derive(Parser, Debug)]
struct Args {
    /// The litgate binary to measure.
    #[arg(long)]
    litgate: PathBuf,
    /// Sessions the fake litd holds.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Stalled calls in total.
    #[arg(long, default_value_t = 150)]
    stalled: usize,
    /// Stalled calls added between two measurements.
    #[arg(long, default_value_t = 25)]
    step: usize,
    /// `same` (one entry) or `distinct` (an entry per stalled call).
    #[arg(long, default_value = "same")]
    credentials: String,
    /// Extra TOML appended to litgate's config (e.g. a `[cache]` table).
    #[arg(long, default_value = "")]
    extra: String,
}

struct Gate {
    child: Child,
    public: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    cert: Vec<u8>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_gate(bin: &Path, dir: &Path, litd: &DemoLitd, extra: &str) -> Gate {
    let cert = dir.join("litd-tls.cert");
    std::fs::write(&cert, litd.cert_pem().unwrap()).unwrap();
    let data = dir.join("data");
    let has_cache_table = extra.contains("[cache]");
    let cache = if has_cache_table {
        ""
    } else {
        "[cache]\nttl = \"1h\"\nmax_stale = \"2h\"\n"
    };
    let toml = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\naddr = \"{}\"\ntls_cert = \"{}\"\n\
         [autopilot.relay]\naddr = \"\"\n[rate_limit]\nenabled = false\n{cache}\
         [store]\ndata_dir = \"{}\"\n[admin]\naddr = \"127.0.0.1:0\"\n[log]\nlevel = \"warn\"\n{extra}\n",
        litd.addr(),
        cert.display(),
        data.display()
    );
    let config = dir.join("litgate.toml");
    std::fs::write(&config, toml).unwrap();
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("litgate.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.starts_with("litgate listening "))
            .expect("litgate reports where it listens");
        std::thread::spawn(move || lines.for_each(drop));
        line
    };
    let addr = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|a| a.parse().ok())
            .unwrap()
    };
    Gate {
        public: addr("public="),
        admin: addr("admin="),
        cert: std::fs::read(data.join("tls.cert")).unwrap(),
        child,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

async fn metrics(admin: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// An h2 connection to litgate over pinned TLS; `window` is the stream window it grants.
async fn connect(gate: &Gate, window: u32) -> h2::client::SendRequest<Bytes> {
    let mut tls = litgate::tls::pinned::pem_client_config(&gate.cert).unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(gate.public).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let io = TlsConnector::from(Arc::new(tls))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(io)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.unwrap()
}

fn request(gate: &Gate, mac: &str) -> http::Request<()> {
    http::Request::post(format!("https://{}{LIST}", gate.public))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("macaroon", mac)
        .body(())
        .unwrap()
}

const EMPTY_FRAME: &[u8] = &[0, 0, 0, 0, 0];

/// One whole call, read to the end: returns the body length.
async fn full_call(gate: &Gate, mac: &str) -> usize {
    let mut send = connect(gate, 1 << 20).await;
    let (resp, mut body) = send.send_request(request(gate, mac), false).unwrap();
    body.send_data(Bytes::from_static(EMPTY_FRAME), true)
        .unwrap();
    let mut recv = resp.await.unwrap().into_body();
    let mut n = 0;
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        n += chunk.len();
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    n
}

/// A call whose answer is never read: the stream window is 0. Returns what keeps it open.
async fn stalled_call(gate: &Gate, mac: &str) -> impl Sized {
    let mut send = connect(gate, 0).await;
    let (resp, mut body) = send.send_request(request(gate, mac), false).unwrap();
    body.send_data(Bytes::from_static(EMPTY_FRAME), true)
        .unwrap();
    let head = resp.await.unwrap();
    (send, body, head)
}

fn credential(litd: &DemoLitd, i: usize) -> String {
    // A distinct, valid caveat per copy: 2099-01-01T00:00:00Z plus i seconds.
    let t = litgate::macaroon::format_rfc3339(
        UNIX_EPOCH + Duration::from_secs(4_070_908_800 + i as u64),
    );
    attenuate(litd.macaroon(), &format!("time-before {t}")).to_hex()
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    let litd = DemoLitd::start(DemoLitdConfig {
        tls: true,
        ..Default::default()
    })
    .unwrap();
    litd.add_bulk_sessions(args.sessions);
    let gate = spawn_gate(&args.litgate, dir.path(), &litd, &args.extra);
    let pid = gate.child.id();
    let distinct = args.credentials == "distinct";
    let macs: Vec<String> = (0..args.stalled)
        .map(|i| {
            if distinct {
                credential(&litd, i)
            } else {
                litd.macaroon_hex()
            }
        })
        .collect();
    // Prime: one full read per credential used (a miss that stores the entry).
    let mut answer = 0;
    let mut primed = std::collections::HashSet::new();
    for m in &macs {
        if primed.insert(m.clone()) {
            answer = full_call(&gate, m).await;
        }
    }
    let m = metrics(gate.admin).await;
    println!(
        "litgate {} ; {} sessions, answer {answer} bytes; credentials {}; entries {:?}",
        args.litgate.display(),
        args.sessions,
        args.credentials,
        metric(&m, "litgate_cache_entries")
    );
    println!(
        "stalled  rss_kib  delta_kib  per_stalled_kib  replay_bytes  overflows  hits  litd_lists"
    );
    let base = rss_kib(pid);
    let mut held = Vec::new();
    let mut done = 0;
    let report = |done: usize, rss: u64, m: &str, litd: &DemoLitd| {
        let delta = rss as i64 - base as i64;
        println!(
            "{done:>7}  {rss:>7}  {delta:>9}  {:>15.1}  {:>12}  {:>9}  {:>4}  {:>10}",
            if done == 0 {
                0.0
            } else {
                delta as f64 / done as f64
            },
            metric(m, "litgate_cache_replay_bytes").map_or("-".into(), |v| v.to_string()),
            metric(m, "litgate_cache_replay_overflows_total").map_or("-".into(), |v| v.to_string()),
            metric(m, "litgate_cache_hits_total").unwrap_or(0.0),
            litd.count(LIST),
        );
    };
    report(0, base, &metrics(gate.admin).await, &litd);
    while done < args.stalled {
        let upto = (done + args.step).min(args.stalled);
        for m in &macs[done..upto] {
            held.push(stalled_call(&gate, m).await);
        }
        done = upto;
        // Let the process settle (allocator, connection tasks) before sampling.
        tokio::time::sleep(Duration::from_millis(300)).await;
        report(done, rss_kib(pid), &metrics(gate.admin).await, &litd);
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = metrics(gate.admin).await;
    println!(
        "after the stalled calls closed: rss {} KiB, replay_bytes {:?}",
        rss_kib(pid),
        metric(&m, "litgate_cache_replay_bytes")
    );
}
