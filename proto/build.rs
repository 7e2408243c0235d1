//! Compiles the `.proto` files with `protox` (pure Rust, no system `protoc`) and tonic codegen.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/aggregate_gateway_v1.proto",
    "proto/projection_gateway_v1.proto",
    "proto/projection_admin_v1.proto",
    "proto/runner_admin_v1.proto",
    "proto/runner_gateway_v1.proto",
    "proto/node_admin_v1.proto",
    "proto/ops_admin_v1.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The encoded descriptor set feeds gRPC server reflection.
    std::fs::write(
        out_dir.join("cloudlysis_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
