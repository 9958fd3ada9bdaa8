//! Generates Rust types for etcd's v3 API messages (prost only: no gRPC code in the core).
//! The server crate generates the gRPC services on top of these types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let files = [
        "etcd/api/etcdserverpb/rpc.proto",
        "etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
        "etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
    ]
    .map(|f| proto_root.join(f));
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.compile_protos(&files, &[proto_root.clone(), include])?;
    println!("cargo:rerun-if-changed={}", proto_root.display());
    Ok(())
}
