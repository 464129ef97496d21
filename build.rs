//! Compiles `proto/` with protox (pure Rust: no `protoc` on the build machine), then generates
//! prost messages, tonic clients/servers and pbjson (protojson) serde impls for the REST codec.

use std::{env, fs, path::PathBuf};

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
