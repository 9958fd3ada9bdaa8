//! Generates the gRPC services: etcd's v3 API (on the message types of `strata-core`), and
//! Strata's own node-to-node transport and administration API, and gRPC's standard health
//! service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let config = || {
        let mut config = tonic_prost_build::Config::new();
        config.protoc_executable(&protoc);
        config
    };
    let etcd_files = [
        "etcd/api/etcdserverpb/rpc.proto",
        "etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
        "etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
    ]
    .map(|f| proto_root.join(f));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".etcdserverpb", "::strata_core::pb::etcdserverpb")
        .extern_path(".mvccpb", "::strata_core::pb::mvccpb")
        .extern_path(".authpb", "::strata_core::pb::authpb")
        .extern_path(".v3lockpb", "::strata_core::pb::v3lockpb")
        .extern_path(".v3electionpb", "::strata_core::pb::v3electionpb")
        .compile_with_config(config(), &etcd_files, &[proto_root.clone(), include.clone()])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_with_config(
        config(),
        &[
            proto_root.join("strata/raft.proto"),
            proto_root.join("strata/admin.proto"),
            proto_root.join("grpc/health/v1/health.proto"),
        ],
        &[proto_root.clone(), include],
    )?;
    println!("cargo:rerun-if-changed={}", proto_root.display());
    Ok(())
}
