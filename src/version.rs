//! What `litgate --version` prints: the package version, the git commit it was built from and
//! the build date, recorded by `build.rs` ("unknown" when the build had no git checkout and no
//! `LITGATE_GIT_COMMIT`). Read-only constants; nothing here touches the network or the disk.

/// The git commit (12 hex digits) the binary was built from, or "unknown".
pub const GIT_COMMIT: &str = env!("LITGATE_GIT_COMMIT");

/// The build date, UTC, `YYYY-MM-DD` (`SOURCE_DATE_EPOCH` when the build set it).
pub const BUILD_DATE: &str = env!("LITGATE_BUILD_DATE");

/// `0.1.0 (commit 0123456789ab, built 2026-01-31)`: clap prints it after the program name.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LITGATE_GIT_COMMIT"),
    ", built ",
    env!("LITGATE_BUILD_DATE"),
    ")"
);
