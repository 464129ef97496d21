//! Compiles `proto/` with protox (pure Rust: no `protoc` on the build machine), then generates
//! prost messages, tonic clients/servers and pbjson (protojson) serde impls for the REST codec.
//! Also records what `litgate --version` prints besides the version: the git commit and the
//! build date (`LITGATE_GIT_COMMIT`, `LITGATE_BUILD_DATE`; see `build_info`), and hands the
//! release link of the binary its hot-function order (`link/symbol-order.txt`; see
//! `symbol_order`). No network.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/litrpc/lit-sessions.proto",
    "proto/litrpc/lit-autopilot.proto",
    "proto/litrpc/lit-status.proto",
    "proto/autopilotserverrpc/autopilotserver.proto",
    "proto/litgatetest/echo.proto",
];

const INCLUDES: &[&str] = &[
    "proto/litrpc",
    "proto/autopilotserverrpc",
    "proto/litgatetest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    build_info()?;
    symbol_order()?;
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, INCLUDES)?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("litgate_descriptor.bin");
    fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;

    // protojson as litd's REST gateway speaks it: snake_case names (UseProtoNames), every field
    // emitted (EmitUnpopulated). Unknown keys are tolerated when parsing so that litgate can
    // validate a newer client's body and still forward the keys it does not know.
    pbjson_build::Builder::new()
        .register_descriptors(&fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .emit_fields()
        .ignore_unknown_fields()
        .build(&[".litrpc", ".autopilotserverrpc"])?;
    Ok(())
}

/// The commit and date `litgate --version` prints, as `cargo:rustc-env`.
///
/// Commit: `LITGATE_GIT_COMMIT` when set (a container build has no `.git`, so the Dockerfile
/// passes its revision build argument), else `git rev-parse` of this package's own checkout,
/// else "unknown". Date (UTC, `YYYY-MM-DD`): from `SOURCE_DATE_EPOCH` when set (reproducible
/// builds), else the time this script runs. The script reruns when HEAD moves, so the commit
/// stays true; a build from a dirty tree reports the commit it started from.
fn build_info() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=LITGATE_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A full commit id (a CI's REVISION) is shortened like git's own, to 12 digits.
    let commit = env::var("LITGATE_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .map(|c| match c.get(..12) {
            Some(short) if c.bytes().all(|b| b.is_ascii_hexdigit()) => short.to_string(),
            _ => c,
        })
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LITGATE_GIT_COMMIT={commit}");

    // Empty counts as unset: a container build passes the argument whether or not it has one.
    let when = match env::var("SOURCE_DATE_EPOCH").map(|s| s.trim().to_string()) {
        Ok(s) if !s.is_empty() => match s.parse::<u64>() {
            Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            Err(_) => {
                return Err(format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds").into())
            }
        },
        _ => SystemTime::now(),
    };
    let stamp = humantime::format_rfc3339_seconds(when).to_string();
    let date = stamp.get(..10).unwrap_or("unknown");
    println!("cargo:rustc-env=LITGATE_BUILD_DATE={date}");
    Ok(())
}

/// Release builds of the `litgate` binary link its hot functions side by side: the list in
/// `link/symbol-order.txt` (made by `link/generate.sh` from callgrind profiles of serial calls)
/// goes to lld as `--symbol-ordering-file`. A lone call runs on caches that the other processes
/// of the host have cooled; with its code packed into half as many pages it costs measurably
/// less user time (link/README.md).
///
/// Only where lld is known to link: x86_64-unknown-linux-gnu with rustc 1.90 or later (its
/// default linker there) and no linker chosen by configuration or RUSTFLAGS. Anywhere else the
/// link is left as it is; `LITGATE_SYMBOL_ORDER=off` leaves it alone too. Names the build does
/// not define (another toolchain or Cargo.lock: the names carry hashes) are skipped by lld; a
/// release build warns when the list was made with another rustc.
fn symbol_order() -> Result<(), Box<dyn std::error::Error>> {
    const LIST: &str = "link/symbol-order.txt";
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-env-changed=LITGATE_SYMBOL_ORDER");
    let var = |k: &str| env::var(k).unwrap_or_default();
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if var("PROFILE") != "release"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || var("LITGATE_SYMBOL_ORDER") == "off"
        || env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("linker")
        || flags.contains("link-self-contained")
    {
        return Ok(());
    }
    let rustc = Command::new(env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("-V")
        .output()?;
    let rustc = String::from_utf8_lossy(&rustc.stdout).trim().to_string();
    // "rustc 1.95.0 (59807616e 2026-04-14)": lld is the default linker from 1.90 on.
    let minor = rustc
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    if !rustc.starts_with("rustc 1.") || minor.is_none_or(|m| m < 90) {
        return Ok(());
    }
    let list = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join(LIST);
    let Ok(text) = fs::read_to_string(&list) else {
        return Ok(());
    };
    let made_with = text
        .lines()
        .find_map(|l| l.strip_prefix("# made with: "))
        .unwrap_or("");
    if made_with != rustc {
        println!(
            "cargo:warning={LIST} was made with {made_with:?}, this is {rustc:?}: its names may \
             not match this build; `bash link/generate.sh` remakes it"
        );
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    Ok(())
}

/// `git rev-parse --short=12 HEAD` of the checkout this package is the top of, and a rerun of
/// this script when that HEAD moves. None without git, outside a checkout, or when the checkout
/// found is some enclosing repository rather than this package's own.
fn git_commit() -> Option<String> {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR")?);
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&manifest_dir)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if fs::canonicalize(&top).ok()? != fs::canonicalize(&manifest_dir).ok()? {
        return None;
    }
    // HEAD itself, and the branch file it points at (or packed-refs once it is packed). Only
    // files that exist: cargo reruns a script every build for a path that does not.
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])?];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &branch])?);
        watch.push(git(&["rev-parse", "--git-path", "packed-refs"])?);
    }
    for path in watch {
        let path = manifest_dir.join(path);
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
