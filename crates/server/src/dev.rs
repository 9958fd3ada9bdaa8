//! `strata dev`: a local three-member cluster as child processes, with data under one
//! directory. It prints the endpoints, and on Ctrl-C or SIGTERM stops every member it started
//! (SIGTERM, then SIGKILL after a grace period).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::process::{Child, Command};

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Directory holding every member's data.
    #[arg(long, default_value = "dev-data")]
    pub dir: PathBuf,
    /// Client port of the first member; members use PORT, PORT+1, PORT+2 for clients and
    /// PORT+100, PORT+101, PORT+102 for peers.
    #[arg(long, default_value_t = 2379)]
    pub port: u16,
    /// Number of members.
    #[arg(long, default_value_t = 3)]
    pub members: u16,
}

pub async fn run(
    args: DevArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the strata binary")?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let names: Vec<String> = (1..=args.members).map(|i| format!("s{i}")).collect();
    let peer_url = |i: u16| format!("http://127.0.0.1:{}", args.port + 100 + i);
    let client_url = |i: u16| format!("http://127.0.0.1:{}", args.port + i);
    let initial_cluster: Vec<String> =
        names.iter().enumerate().map(|(i, n)| format!("{n}={}", peer_url(i as u16))).collect();
    let mut children: Vec<Child> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let i = i as u16;
        let child = Command::new(&exe)
            .arg("start")
            .args(["--name", name])
            .arg("--data-dir")
            .arg(args.dir.join(name))
            .args(["--listen-client-urls", &client_url(i)])
            .args(["--listen-peer-urls", &peer_url(i)])
            .args(["--initial-cluster", &initial_cluster.join(",")])
            .args(["--initial-cluster-token", "strata-dev"])
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start member {name}"))?;
        children.push(child);
    }
    let endpoints: Vec<String> = (0..args.members).map(client_url).collect();
    println!("strata dev: {} members, data in {}", args.members, args.dir.display());
    println!("endpoints: {}", endpoints.join(","));
    println!("try: etcdctl --endpoints={} put hello world", endpoints.join(","));
    println!("press Ctrl-C to stop");

    let mut exited = Box::pin(async {
        loop {
            for child in &mut children {
                if let Ok(Some(status)) = child.try_wait() {
                    return status;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let early_exit = tokio::select! {
        () = shutdown => None,
        status = &mut exited => Some(status),
    };
    drop(exited);
    if let Some(status) = early_exit {
        eprintln!("a member exited ({status}); stopping the others");
    }
    stop_all(&mut children).await;
    println!("strata dev: stopped");
    Ok(())
}

async fn stop_all(children: &mut [Child]) {
    for child in children.iter() {
        if let Some(pid) = child.id() {
            send_sigterm(pid);
        }
    }
    for child in children.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill().await;
            }
        }
    }
}

fn send_sigterm(pid: u32) {
    // std has no portable "send SIGTERM"; `kill` from the OS does it without unsafe code.
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}
