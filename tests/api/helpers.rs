//! A harness that behaves like the Functions host: it starts the real binary with
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, polls `GET /` until it answers, and POSTs chunked envelopes.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aml_autodeploy::ledger::{Ledger, record_key};
use aml_autodeploy::startup::Settings;
use aml_autodeploy::startup::open_ledger;
use serde_json::{Value, json};

pub use crate::events::*;

/// How often a test that waits for the handler to get somewhere asks again.
pub const POLL: Duration = Duration::from_millis(100);

/// How long a test waits for a rollout to reach a state (its steps are due at once; a step the
/// service asks to wait for, e.g. `Retry-After: 1`, is due a second later).
pub const PATIENCE: Duration = Duration::from_secs(22);

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_aml-autodeploy")
}

/// A running handler process.
pub struct TestApp {
    pub port: u16,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
    pub ready_after: Duration,
}

/// What the handler answered.
#[derive(Debug)]
pub struct HostReply {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    pub raw: String,
}

impl HostReply {
    pub fn logs(&self) -> Vec<String> {
        self.body["Logs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn logs_text(&self) -> String {
        self.logs().join("\n")
    }

    pub fn decision(&self) -> &str {
        self.body["ReturnValue"]["decision"].as_str().unwrap_or("")
    }
}

/// A clean environment for the child: only PATH, plus what the test sets (ambient GitHub or Azure
/// variables on a developer machine must not leak into tests).
fn base_command(dir: &std::path::Path) -> Command {
    command_for(binary(), dir)
}

fn command_for(program: &str, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AUTODEPLOY_LOG_FORMAT", "json")
        // No floor between rollout steps: a test's Reconcile passes find the next step due at
        // once instead of a second later (a test may still set its own value).
        .env("AUTODEPLOY_MIN_STEP_SECS", "0")
        .current_dir(dir);
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn drain(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buffer = Arc::new(Mutex::new(String::new()));
    let sink = buffer.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buffer
}

impl TestApp {
    /// Starts the handler with `config` as `autodeploy.yml` in a fresh working directory.
    pub async fn spawn(config: &str, env: &[(&str, &str)]) -> TestApp {
        Self::spawn_program(binary(), config, env).await
    }

    /// Starts another build of the handler (e.g. the packaged binary).
    pub async fn spawn_program(program: &str, config: &str, env: &[(&str, &str)]) -> TestApp {
        Self::spawn_with_args(program, &[], config, env).await
    }

    /// Starts the handler in webhook mode on a free loopback port.
    pub async fn spawn_webhook(config: &str, env: &[(&str, &str)]) -> TestApp {
        Self::spawn_with_args(binary(), &["serve", "--webhook"], config, env).await
    }

    async fn spawn_with_args(
        program: &str,
        args: &[&str],
        config: &str,
        env: &[(&str, &str)],
    ) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("autodeploy.yml"), config).unwrap();
        // A port from `free_port` is only free until somebody else takes it: with many fakes,
        // fronts and outgoing connections in parallel tests, another socket sometimes does before
        // the handler binds. The handler then exits saying so, and a new port is tried.
        'attempt: for attempt in 1..=3 {
            let port = free_port();
            let mut cmd = command_for(program, dir.path());
            cmd.args(args);
            if !args.is_empty() {
                cmd.args(["--bind", &format!("127.0.0.1:{port}")]);
            }
            cmd.env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
                .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", "test-worker")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let started = Instant::now();
            // Killed if this test panics before the handler is ready (a `Child` left to drop
            // would outlive the test).
            let mut child = Starting(Some(cmd.spawn().expect("start the handler")));
            let stdout = drain(child.get().stdout.take().unwrap());
            let stderr = drain(child.get().stderr.take().unwrap());
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap();

            // Readiness exactly as the host does it: GET / every 25 ms; any HTTP status counts.
            let ready_after = loop {
                if started.elapsed() > Duration::from_secs(15) {
                    panic!(
                        "handler not ready after 15 s; stderr: {}",
                        stderr.lock().unwrap()
                    );
                }
                if let Ok(Some(status)) = child.get().try_wait() {
                    // Let the drain thread read the last words.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let said = stderr.lock().unwrap().clone();
                    if attempt < 3 && said.contains("failed to bind") {
                        continue 'attempt;
                    }
                    panic!("handler exited with {status}; stderr: {said}");
                }
                if client
                    .get(format!("http://127.0.0.1:{port}/"))
                    .send()
                    .await
                    .is_ok()
                {
                    break started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            };
            return TestApp {
                port,
                child: child.0.take().expect("started"),
                stdout,
                stderr,
                _dir: dir,
                client,
                ready_after,
            };
        }
        unreachable!("the last attempt returns or panics")
    }

    /// POSTs a body to `/ModelRegistered` the way the host does: chunked, no Content-Length.
    pub async fn post_raw(&self, body: Vec<u8>, invocation_id: &str) -> HostReply {
        let mid = body.len() / 2;
        let (first, second) = body.split_at(mid);
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(first.to_vec()), Ok(second.to_vec())];
        let stream = futures_util::stream::iter(chunks);
        let response = self
            .client
            .post(format!("http://127.0.0.1:{}/ModelRegistered", self.port))
            .header("Content-Type", "application/json; charset=utf-8")
            .header("X-Azure-Functions-InvocationId", invocation_id)
            .header("X-Azure-Functions-HostVersion", "4.1037.0.0")
            .header("User-Agent", "Azure-Functions-Host/4.1037.0.0")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .expect("the handler answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let raw = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        HostReply {
            status,
            content_type,
            body,
            raw,
        }
    }

    /// POSTs `event` inside a host envelope.
    pub async fn post_event(&self, event: &Value) -> HostReply {
        self.post_raw(
            envelope(event).to_string().into_bytes(),
            "11111111-2222-3333-4444-555555555555",
        )
        .await
    }

    /// The timer's POST to `/Reconcile`, with the timer envelope the host sends.
    pub async fn post_reconcile(&self) -> HostReply {
        let body = json!({
            "Data": { "timer": { "Schedule": { "AdjustForDST": true }, "ScheduleStatus": null, "IsPastDue": false } },
            "Metadata": { "sys": { "MethodName": "Reconcile", "UtcNow": "2026-11-26T10:01:00Z", "RandGuid": "5d3c0a9e-1f7b-4c1a-9e8e-2a6d2b9c4f10" } }
        });
        let response = self
            .client
            .post(format!("http://127.0.0.1:{}/Reconcile", self.port))
            .header("Content-Type", "application/json; charset=utf-8")
            .header("X-Azure-Functions-InvocationId", "reconcile-inv")
            .body(body.to_string())
            .send()
            .await
            .expect("the handler answers");
        let status = response.status().as_u16();
        let raw = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        HostReply {
            status,
            content_type: "application/json".into(),
            body,
            raw,
        }
    }

    /// Kills the process at once (SIGKILL), as a crash or a host restart would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A request to this server (webhook mode).
    pub fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        self.client.request(
            method,
            format!("http://127.0.0.1:{}{path_and_query}", self.port),
        )
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// A handler process that is not a [`TestApp`] yet.
struct Starting(Option<Child>);

impl Starting {
    fn get(&mut self) -> &mut Child {
        self.0.as_mut().expect("started")
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary as a CLI command in `dir` with a clean environment.
pub fn run_cli(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut cmd = base_command(dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("run the CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The Azurite connection string `scripts/test.sh` exports.
pub fn azurite() -> String {
    std::env::var("AUTODEPLOY_TEST_STORAGE").expect(
        "AUTODEPLOY_TEST_STORAGE is not set: the ledger tests need Azurite; run them with scripts/test.sh, \
         which installs and starts it",
    )
}

/// A fresh container name, so tests sharing one Azurite never see each other's records.
pub fn unique_container() -> String {
    format!("t{}", uuid_like())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}{n}", nanos, std::process::id())
}

/// The ledger in `container` of the storage account `storage` (a connection string), opened
/// through the library as the handler opens it.
pub fn test_ledger(storage: &str, container: &str) -> Ledger {
    let env = |name: &str| match name {
        "AUTODEPLOY_STORAGE" => Some(storage.to_string()),
        "AUTODEPLOY_CONTAINER" => Some(container.to_string()),
        _ => None,
    };
    open_ledger(
        &Settings::from_env(&env),
        &aml_autodeploy::http::Http::new(),
    )
    .unwrap_or_else(|e| panic!("open the ledger: {e}"))
}

/// The ledger record of `model:version` in [`WS`], as JSON (what `status MODEL:VERSION --json`
/// prints), read through the library: starting a `status` process per read cost a test more than
/// the read.
pub async fn ledger_record(storage: &str, container: &str, model: &str, version: &str) -> Value {
    let key = record_key(WS, model, version);
    match test_ledger(storage, container).load(&key).await {
        Ok(Some((record, _))) => serde_json::to_value(&record).expect("a record serializes"),
        Ok(None) => panic!("no record for {model}:{version} in {container}"),
        Err(e) => panic!("read {key}: {e}"),
    }
}

/// The ledger record of `model:version` as the operator's `status MODEL:VERSION --json` prints it
/// (for tests of the command itself).
pub async fn status_record(storage: &str, container: &str, model: &str, version: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("{model}:{version}");
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        run_cli(
            dir.path(),
            &["status", "--storage", storage, &target, "--json"],
            &[("AUTODEPLOY_CONTAINER", container)],
        )
    });
    assert_eq!(code, 0, "{stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"))
}

/// A connection string for an Azurite (or a closed port) on loopback `port`, with Azurite's
/// well-known development account key (public).
pub fn azurite_at(port: u16) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
}

/// POSTs `body` to `path` on `port` the way the Functions host sends the timer's envelope: a raw
/// HTTP/1.1 request, `Transfer-Encoding: chunked`, the body written in `pieces` chunks with a
/// short pause before each. Returns the status line's code, or the I/O error the client saw
/// (a reset connection or a broken pipe when the server answered before reading the body).
pub async fn post_in_pieces(
    port: u16,
    path: &str,
    body: &[u8],
    pieces: usize,
) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Transfer-Encoding: chunked\r\nX-Azure-Functions-InvocationId: chunked-{port}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    for piece in body.chunks(body.len().div_ceil(pieces.max(1)).max(1)) {
        tokio::time::sleep(Duration::from_millis(15)).await;
        stream
            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await?;
        stream.write_all(piece).await?;
        stream.write_all(b"\r\n").await?;
    }
    stream.write_all(b"0\r\n\r\n").await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))
}
