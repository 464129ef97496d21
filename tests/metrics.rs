//! The admin face's `/metrics` names an operator's dashboards rely on: the process metrics
//! under their conventional unprefixed names, `litgate_build_info`, and the catalogue's last
//! successful fetch as a timestamp (litd-facing request metrics are asserted where the calls
//! are made: passthrough, relay, websocket).

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::*;
use litgate::clock::Clock;

#[tokio::test]
async fn process_metrics_build_info_and_the_catalogue_timestamp_are_exported() {
    let env = Env::start().await;
    let fetched_at = env
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The refresher fetches at start; until then the gauge reads 0, never "age 0".
    let uri = env.admin_uri("/metrics");
    let fetched = eventually(200, Duration::from_millis(20), || async {
        let text = admin_get(&uri).await.1;
        metric(&text, "litgate_catalogue_last_success_timestamp_seconds") > 0.0
    })
    .await;
    // CPU time is counted in clock ticks (10 ms): spend a few so the counter cannot read 0
    // merely because this process has been quick so far.
    let until = std::time::Instant::now() + Duration::from_millis(50);
    let mut spin = 0u64;
    while std::time::Instant::now() < until {
        spin = std::hint::black_box(spin.wrapping_add(1));
    }
    let text = admin_get(&uri).await.1;
    assert!(fetched, "{text}");
    assert_eq!(
        metric(&text, "litgate_catalogue_last_success_timestamp_seconds"),
        fetched_at
    );
    assert!(!text.contains("litgate_catalogue_age_seconds"), "{text}");

    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
    ] {
        assert!(metric(&text, name) > 0.0, "{name}:\n{text}");
    }
    let start = metric(&text, "process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The test process started litgate in-process: some time before now, after 2020.
    assert!(start > 1.6e9 && start <= now + 1.0, "{start}");
    // OpenMetrics: the family is `process_cpu_seconds`, its sample `_total`.
    assert!(
        text.contains("# TYPE process_cpu_seconds counter"),
        "{text}"
    );
    let build = format!(
        "litgate_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        litgate::version::GIT_COMMIT
    );
    assert!(text.lines().any(|l| l == build), "{build}:\n{text}");
    env.stop().await;
}
