//! Process metrics as Prometheus client libraries export them (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`), read from `/proc/self` when `/metrics` is
//! scraped, and `litgate_build_info{version, commit} 1`. Registered on the root registry (the
//! process names carry no `litgate_` prefix, so dashboards built for any exporter work). A
//! value that cannot be read is left out of that scrape, never reported as 0. Linux only: on
//! other systems only `litgate_build_info` is exported.

use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

/// Registers the process collector on `root` and `litgate_build_info` under the `litgate_`
/// prefix.
pub(crate) fn register(root: &mut Registry) {
    #[cfg(target_os = "linux")]
    root.register_collector(Box::new(linux::ProcessCollector));
    let info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    info.get_or_create(&vec![
        ("version", env!("CARGO_PKG_VERSION")),
        ("commit", crate::version::GIT_COMMIT),
    ])
    .set(1);
    root.sub_registry_with_prefix("litgate").register(
        "build_info",
        "litgate's version and git commit (always 1)",
        info,
    );
}

#[cfg(target_os = "linux")]
mod linux {
    use prometheus_client::{
        collector::Collector,
        encoding::{DescriptorEncoder, EncodeMetric},
        metrics::{counter::ConstCounter, gauge::ConstGauge},
    };

    /// Reads `/proc/self` on each scrape.
    #[derive(Debug)]
    pub(super) struct ProcessCollector;

    /// What one scrape read.
    #[derive(Debug, Default, PartialEq)]
    pub(super) struct Sample {
        pub cpu_seconds: Option<f64>,
        pub resident_bytes: Option<f64>,
        pub virtual_bytes: Option<f64>,
        pub start_time_seconds: Option<f64>,
        pub open_fds: Option<f64>,
        pub max_fds: Option<f64>,
    }

    impl Sample {
        fn read() -> Sample {
            let ticks = rustix::param::clock_ticks_per_second() as f64;
            let page = rustix::param::page_size() as f64;
            let stat = std::fs::read_to_string("/proc/self/stat").ok();
            let btime = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| boot_time(&s));
            let mut sample = stat
                .as_deref()
                .and_then(|s| from_stat(s, ticks, page, btime))
                .unwrap_or_default();
            sample.open_fds = std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as f64);
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            sample.max_fds = limit.current.map(|n| n as f64);
            sample
        }
    }

    /// The fields of `/proc/self/stat` (proc(5)): after the command name in parentheses
    /// (which may itself hold spaces and parentheses, hence the last `)`), field 3 is the
    /// state; utime and stime (14, 15) and starttime (22) are in clock ticks, vsize (23) in
    /// bytes, rss (24) in pages.
    pub(super) fn from_stat(
        stat: &str,
        ticks: f64,
        page: f64,
        btime: Option<f64>,
    ) -> Option<Sample> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `fields[0]` is field 3.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        Some(Sample {
            cpu_seconds: Some((field(14)? + field(15)?) / ticks),
            virtual_bytes: field(23),
            resident_bytes: field(24).map(|p| p * page),
            start_time_seconds: btime.zip(field(22)).map(|(b, t)| b + t / ticks),
            ..Sample::default()
        })
    }

    /// The boot time in Unix seconds: the `btime` line of `/proc/stat`.
    pub(super) fn boot_time(proc_stat: &str) -> Option<f64> {
        proc_stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    }

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let s = Sample::read();
            if let Some(v) = s.cpu_seconds {
                let c = ConstCounter::new(v);
                c.encode(encoder.encode_descriptor(
                    "process_cpu_seconds",
                    "Total user and system CPU time spent in seconds",
                    None,
                    c.metric_type(),
                )?)?;
            }
            let gauges = [
                (
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    s.resident_bytes,
                ),
                (
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    s.virtual_bytes,
                ),
                (
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch in seconds",
                    s.start_time_seconds,
                ),
                (
                    "process_open_fds",
                    "Number of open file descriptors",
                    s.open_fds,
                ),
                (
                    "process_max_fds",
                    "Maximum number of open file descriptors",
                    s.max_fds,
                ),
            ];
            for (name, help, value) in gauges {
                if let Some(v) = value {
                    let g = ConstGauge::new(v);
                    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
                }
            }
            Ok(())
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::linux::*;

    #[test]
    fn stat_fields_are_read_after_the_last_parenthesis() {
        // A command name with a space and a parenthesis; utime 250, stime 50, starttime 1000,
        // vsize 4096000, rss 300 pages (proc(5) field numbers 14, 15, 22, 23, 24).
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        for (n, v) in [
            (14, "250"),
            (15, "50"),
            (22, "1000"),
            (23, "4096000"),
            (24, "300"),
        ] {
            fields[n - 3] = v.to_string();
        }
        let stat = format!("1234 (lit gate) x) {}", fields.join(" "));
        let s = from_stat(&stat, 100.0, 4096.0, Some(1_700_000_000.0)).unwrap();
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.resident_bytes, Some(300.0 * 4096.0));
        assert_eq!(s.virtual_bytes, Some(4_096_000.0));
        assert_eq!(s.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(from_stat("1234 (truncated", 100.0, 4096.0, None), None);
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000.0)
        );
    }
}
