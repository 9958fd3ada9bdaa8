//! The Strata node: everything that touches sockets, threads, clocks and the disk's directory
//! layout. The logic it runs lives in `strata-core`; this crate is the I/O shell around it.
//!
//! * [`shell`]: the driver thread that owns the node's Raft replicas and runs their rounds;
//! * [`transport`]: node-to-node gRPC streams carrying batched Raft messages;
//! * [`api`]: etcd's v3 gRPC services and the HTTP endpoints on the client port;
//! * [`server`]: wires a node together from its [`config::NodeConfig`];
//! * [`cli`]: the `strata` command line (`start`, `dev`, `get`, `put`, `del`, `status`, `bench`);
//! * [`bench`]: the load generator behind `strata bench`, for any etcd v3 server.

pub mod admission;
pub mod api;
pub mod authority;
pub mod auto_compaction;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod cli_client;
pub mod coalesce;
pub mod config;
pub mod config_file;
pub mod dev;
pub mod etcd_flags;
pub mod open_trail;
pub mod pb;
pub mod raft_log;
pub mod server;
pub mod shell;
pub mod timed_engine;
pub mod transport;
