//! Generated gRPC code: etcd's services over `strata_core::pb` messages, and Strata's own
//! services (the node-to-node transport, the administration API), and gRPC's health service.
#![allow(clippy::all, missing_docs)]

pub use strata_core::pb::*;

pub mod etcd {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}
pub mod lock {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}
pub mod election {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
}
pub mod strata {
    include!(concat!(env!("OUT_DIR"), "/stratapb.rs"));
}
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
}
