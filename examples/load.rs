//! Load test for `scripts/load.sh` (not part of the product): 2,000 deliveries in one minute over
//! 200 model versions, through the host contract, with the ledger in Azurite. Each version gets 10
//! deliveries: 3 at once (30% of them arrive in parallel), the other 7 spread over the next seconds.
//! Exactly 200 GitHub dispatches must come out. Prints p50/p99 handler latency and resident memory.
//!
//! Usage: load <aml-autodeploy binary>   (needs AUTODEPLOY_TEST_STORAGE, see scripts/with-azurite.sh)

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

const WS: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ml-ws";
const VERSIONS: usize = 200;
const PER_VERSION: usize = 10;
const BURST: usize = 3;
const DURATION: Duration = Duration::from_secs(60);

struct Handler(Child);

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::main]
async fn main() {
    let binary =
        std::fs::canonicalize(std::env::args().nth(1).expect("usage: load <binary>")).unwrap();
    let storage = std::env::var("AUTODEPLOY_TEST_STORAGE")
        .expect("AUTODEPLOY_TEST_STORAGE (run through scripts/load.sh)");

    // Fake GitHub: count dispatches per version.
    let dispatches = Arc::new(AtomicUsize::new(0));
    let counter = dispatches.clone();
    let gh = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gh_port = gh.local_addr().unwrap().port();
    let fake = axum::Router::new().route(
        "/repos/{owner}/{repo}/dispatches",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(gh, fake).await.unwrap() });

    let dir = std::env::temp_dir().join(format!("aml-autodeploy-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("autodeploy.yml"),
        format!("workspace: {WS}\nrules:\n  - name: load\n    models: [\"load-*\"]\n    github: {{ repository: o/r, event_type: deploy-model }}\n"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let container = format!("load{}", std::process::id());
    let handler = Handler(
        Command::new(&binary)
            .env_clear()
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("AUTODEPLOY_STORAGE", &storage)
            .env("AUTODEPLOY_CONTAINER", &container)
            .env("GITHUB_API_URL", format!("http://127.0.0.1:{gh_port}"))
            .env("GITHUB_TOKEN", "ghp_load")
            .env("RUST_LOG", "warn")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the handler"),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/ModelRegistered");
    let started = Instant::now();
    while client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "handler not ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The schedule: version v starts at v * 60s/200; 3 deliveries at once, 7 more over the next 3 s.
    let spacing = DURATION / VERSIONS as u32;
    let mut tasks = Vec::with_capacity(VERSIONS * PER_VERSION);
    let begin = Instant::now();
    for v in 0..VERSIONS {
        for copy in 0..PER_VERSION {
            let at = spacing * v as u32
                + if copy < BURST {
                    Duration::ZERO
                } else {
                    Duration::from_millis(400 * (copy - BURST + 1) as u64)
                };
            let client = client.clone();
            let url = url.clone();
            // Two distinct event ids per version, as Event Grid's retries and a re-registration would.
            let event = json!({"id": format!("load-{v}-{}", copy % 2), "topic": WS, "subject": format!("models/load-model:{v}"),
                "eventType": "Microsoft.MachineLearningServices.ModelRegistered", "eventTime": "2026-11-26T10:00:00Z",
                "data": {"modelName": "load-model", "modelVersion": v.to_string(), "modelTags": {}}});
            let body = json!({"Data": {"eventGridEvent": event}, "Metadata": {}}).to_string();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(begin + at)).await;
                let sent = Instant::now();
                let status = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-azure-functions-invocationid", format!("load-{v}-{copy}"))
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                (sent.elapsed(), status)
            }));
        }
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (latency, status) = task.await.unwrap();
        if status != 200 {
            failures += 1;
        }
        latencies.push(latency);
    }
    let elapsed = begin.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let rss = rss_mib(handler.0.id());
    let sent = dispatches.load(Ordering::SeqCst);
    println!(
        "deliveries: {} over {:.1}s ({} versions, {} each, {} in parallel)",
        latencies.len(),
        elapsed.as_secs_f64(),
        VERSIONS,
        PER_VERSION,
        BURST
    );
    println!("non-200 answers: {failures}");
    println!(
        "handler latency: p50 {:.1} ms, p99 {:.1} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    println!("resident memory after the run: {rss:.1} MiB");
    println!("GitHub dispatches: {sent} (expected exactly {VERSIONS})");
    drop(handler);
    let _ = std::fs::remove_dir_all(&dir);
    if sent != VERSIONS || failures > 0 {
        eprintln!("load: FAILED");
        std::process::exit(1);
    }
    println!("load: OK");
}
