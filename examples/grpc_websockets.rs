//! One gRPC call over grpc-websockets, the transport the Terminal UI uses for server streams
//! (improbable's `WebsocketTransport`), against litgate or litd. `litgate demo` prints ready
//! commands with its own addresses and files.
//!
//! ```sh
//! # ListSessions: terminated by litgate, which runs it through its session cache
//! cargo run --example grpc_websockets -- --cacert tls.cert --macaroon lit.macaroon.hex 127.0.0.1:8445
//! # a server stream of the demo litd's Echo service: tunnelled to litd as bytes
//! cargo run --example grpc_websockets -- --cacert tls.cert --echo 5 127.0.0.1:8445
//! ```

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::Parser;
use litgate::{
    demo::ws_client,
    proto::{
        litgatetest::{EchoReply, EchoRequest},
        litrpc::{ListSessionsRequest, ListSessionsResponse},
    },
};
use prost::Message;

/// A grpc-websockets call: ListSessions, or with `--echo` the demo's Echo server stream.
#[derive(Parser, Debug)]
struct Args {
    /// The server's certificate to trust (litgate's or litd's tls.cert); none: plaintext.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// A file with the macaroon as hex text (for ListSessions).
    #[arg(long)]
    macaroon: Option<PathBuf>,
    /// Call `litgatetest.Echo/ServerStream` for this many messages instead of ListSessions.
    #[arg(long)]
    echo: Option<u32>,
    /// host:port of litgate's public face (or of litd).
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("grpc_websockets: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let ca = args.cacert.map(std::fs::read).transpose()?;
    let mut metadata = http::HeaderMap::new();
    if let Some(path) = &args.macaroon {
        metadata.insert("macaroon", std::fs::read_to_string(path)?.trim().parse()?);
    }
    let status = match args.echo {
        Some(count) => {
            let req = EchoRequest {
                message: "tick".into(),
                count,
                fail_code: 0,
                delay_ms: 200,
            };
            let path = "/litgatetest.Echo/ServerStream";
            println!("{path} over grpc-websockets to {}", args.addr);
            ws_client::call(
                args.addr,
                ca.as_deref(),
                path,
                &metadata,
                &req.encode_to_vec(),
                |m| match EchoReply::decode(m) {
                    Ok(r) => println!("  message {}: {}", r.index, r.message),
                    Err(e) => println!("  undecodable message: {e}"),
                },
            )
            .await?
        }
        None => {
            let path = "/litrpc.Sessions/ListSessions";
            println!("{path} over grpc-websockets to {}", args.addr);
            let req = ListSessionsRequest {}.encode_to_vec();
            ws_client::call(args.addr, ca.as_deref(), path, &metadata, &req, |m| {
                match ListSessionsResponse::decode(m) {
                    Ok(r) => {
                        println!("  {} sessions", r.sessions.len());
                        for s in r.sessions {
                            println!("    {} ({})", s.label, hex::encode(&s.id));
                        }
                    }
                    Err(e) => println!("  undecodable message: {e}"),
                }
            })
            .await?
        }
    };
    println!("status: {:?} {}", status.code, status.message);
    Ok(if status.code == tonic::Code::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
