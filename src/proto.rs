//! Generated protobuf types: `litrpc` and `autopilotserverrpc` exactly as litd and the Autopilot
//! server put them on the wire (`proto/`), plus a test-only streaming service. Nothing here is
//! written by hand; `build.rs` produces it with protox, so no `protoc` is needed to build.

/// litd's own services (`litrpc.Sessions`, `litrpc.Autopilot`, `litrpc.Status`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod litrpc {
    tonic::include_proto!("litrpc");
    include!(concat!(env!("OUT_DIR"), "/litrpc.serde.rs"));
}

/// The remote Autopilot server's API, which litd calls as a client.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod autopilotserverrpc {
    tonic::include_proto!("autopilotserverrpc");
    include!(concat!(env!("OUT_DIR"), "/autopilotserverrpc.serde.rs"));
}

/// `litgatetest.Echo`: every streaming shape, served by the demo litd only, so that the raw
/// passthrough can be exercised with streams (litrpc itself is unary only).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod litgatetest {
    tonic::include_proto!("litgatetest");
}
