//! A rough put-throughput probe (the full benchmark harness is its own piece of work):
//! `cargo run --release --example putload -- ENDPOINTS CLIENTS SECONDS`.
//! Runs CLIENTS concurrent writers, each with its own connection, for SECONDS (and at most
//! 1,000,000 puts), 8-byte keys and 256-byte values; prints puts/s and latency percentiles.

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoints: Vec<String> = args
        .get(1)
        .map_or("127.0.0.1:2379".into(), Clone::clone)
        .split(',')
        .map(String::from)
        .collect();
    let clients: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let per_client_max = 1_000_000 / clients;
    let value = vec![b'v'; 256];
    let mut tasks = Vec::new();
    for c in 0..clients {
        let endpoint = endpoints[c % endpoints.len()].clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = etcd_client::Client::connect([endpoint], None).await.expect("connect");
            let mut latencies = Vec::new();
            for i in 0..per_client_max {
                if Instant::now() >= deadline {
                    break;
                }
                let key = format!("{:08x}", (c * per_client_max + i) as u32);
                let started = Instant::now();
                client.put(key, value.clone(), None).await.expect("put");
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "clients={clients} puts={} seconds={elapsed:.1} puts/s={:.0} p50={:?} p99={:?}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}
