//! `[runtime]`: how many threads serve. Serde and validation only; the launcher
//! (`runtime::run`) reads the value.

use serde::Deserialize;

use crate::values::Report;

/// The most threads litgate accepts (far beyond any sidecar's cores).
const MAX_THREADS: usize = 256;

/// `[runtime]`: the threads that serve the public face.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads, each running its own single-threaded async runtime with its own public
    /// listener and its own connections to litd. Absent: one per available core.
    pub threads: Option<usize>,
}

impl RuntimeConfig {
    /// The number of threads to run: the configured one, or one per available core.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    pub(crate) fn validate(&self, err: &mut Report<'_>) {
        match self.threads {
            Some(0) => err(
                "runtime.threads",
                "must be at least 1 (leave it out for one per core)".into(),
            ),
            Some(n) if n > MAX_THREADS => {
                err("runtime.threads", format!("{n} is more than {MAX_THREADS}"))
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(threads: Option<usize>) -> Vec<(String, String)> {
        let mut found = Vec::new();
        RuntimeConfig { threads }.validate(&mut |k: &str, m: String| {
            found.push((k.to_string(), m));
        });
        found
    }

    #[test]
    fn threads_default_to_the_cores_and_bad_counts_name_the_key() {
        assert!(RuntimeConfig::default().threads() >= 1);
        assert_eq!(RuntimeConfig { threads: Some(3) }.threads(), 3);
        assert!(errors(None).is_empty());
        assert!(errors(Some(1)).is_empty());
        for bad in [0, MAX_THREADS + 1] {
            let e = errors(Some(bad));
            assert_eq!(e.len(), 1, "{bad}: {e:?}");
            assert_eq!(e[0].0, "runtime.threads");
        }
    }
}
