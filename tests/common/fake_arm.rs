//! A stateful fake of Azure Resource Manager for online endpoints and deployments, on loopback.
//! It keeps endpoints and deployments, runs long-running operations that finish after N polls,
//! enforces the service's rules (traffic sums to 0 or 100; only `Succeeded` deployments get
//! traffic; a deployment with traffic cannot be deleted; mirror ≤ 50% and never on a live
//! deployment; no read-only fields in a PUT; no second PUT of a deployment still provisioning),
//! checks each deployment body against the fields and types of the official
//! `OnlineDeployments_CreateOrUpdate` example, and serves a scoring URL. Every rule violation is
//! recorded: a test that ends with violations fails. Every accepted change is logged in order
//! ([`Change`]), so a test can check that rollouts on an endpoint never overlapped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::events::WS;

/// A network fault the fake can inject (the fault matrix's columns).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// 503 Service Unavailable.
    ServerError,
    /// 429 with `Retry-After: 1`.
    TooManyRequests,
    /// Accepts the request and never answers (past our per-request timeout).
    Hang,
    /// Reads the request, then closes the connection without a byte.
    ClosedConnection,
    /// Answers 2xx with a JSON body cut short of its declared Content-Length.
    TruncatedJson,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub model: String,
    pub provisioning: String,
}

#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    pub traffic: BTreeMap<String, u32>,
    pub mirror: BTreeMap<String, u32>,
    pub auth_mode: String,
}

#[derive(Debug, Clone)]
enum Effect {
    Provision {
        endpoint: String,
        deployment: String,
    },
    Traffic {
        endpoint: String,
        traffic: BTreeMap<String, u32>,
        mirror: BTreeMap<String, u32>,
    },
    Delete {
        endpoint: String,
        deployment: String,
    },
}

#[derive(Debug, Clone)]
struct Op {
    polls_left: u32,
    failure: Option<(String, String)>,
    effect: Effect,
    done: bool,
    /// The effect already took place (traffic applied when it was sent: `traffic_at_once`).
    applied: bool,
}

/// A change ARM accepted, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A deployment PUT.
    Create(String),
    /// A traffic PUT: (traffic, mirror).
    Traffic(BTreeMap<String, u32>, BTreeMap<String, u32>),
    /// A deployment DELETE.
    Delete(String),
}

/// Which requests an [`Injection`] hits.
#[derive(Debug, Clone)]
pub enum PathMatch {
    EndsWith(String),
    Contains(String),
}

/// `fault` for the first `times` requests with `method` whose path matches.
#[derive(Debug, Clone)]
pub struct Injection {
    pub method: &'static str,
    pub path: PathMatch,
    pub fault: Fault,
    pub times: u32,
    pub fired: u32,
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::EndsWith(p) => path.ends_with(p.as_str()),
            PathMatch::Contains(p) => path.contains(p.as_str()),
        }
    }
}

impl Injection {
    fn hits(&self, method: &Method, path: &str) -> bool {
        self.fired < self.times && method.as_str() == self.method && self.path.matches(path)
    }
}

/// Runs `action` once, when the first request with `method` whose path matches arrives (before
/// the fake handles it normally), e.g. to stop storage between an ARM change and its record.
#[derive(Clone)]
pub struct Hook {
    pub method: &'static str,
    pub path: PathMatch,
    pub action: Arc<dyn Fn() + Send + Sync>,
    pub fired: bool,
    /// Matching requests let through before the one that fires it.
    pub skip: u32,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Hook({} {:?}, fired: {})",
            self.method, self.path, self.fired
        )
    }
}

/// The answer (or its absence) for an injected fault.
async fn injected(fault: Fault) -> Response {
    match fault {
        Fault::ServerError => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "injected",
        ),
        Fault::TooManyRequests => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            axum::Json(json!({"error": {"code": "TooManyRequests", "message": "injected"}})),
        )
            .into_response(),
        Fault::Hang => {
            tokio::time::sleep(std::time::Duration::from_secs(120)).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        // Unwinding the connection's task drops the socket without a byte of answer, which is
        // what a reset or a dying proxy looks like to the client.
        Fault::ClosedConnection => panic!("fault matrix: closing the connection without an answer"),
        Fault::TruncatedJson => (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/prov"#,
        )
            .into_response(),
    }
}

/// Who registers model versions in the fake.
pub const REGISTRAR: &str = "registrar@contoso.com";
/// Who changes their tags by default.
pub const APPROVER: &str = "ada@contoso.com";

#[derive(Debug, Default)]
pub struct ArmState {
    pub endpoints: BTreeMap<String, Endpoint>,
    pub deployments: BTreeMap<(String, String), Deployment>,
    ops: HashMap<String, Op>,
    next_op: u32,
    /// Polls before a deployment PUT finishes.
    pub create_polls: u32,
    /// While true, every operation stays InProgress.
    pub hold_operations: bool,
    /// While true, traffic operations stay InProgress.
    pub hold_traffic: bool,
    /// The next deployment PUT ends Failed with this (code, message).
    pub fail_next_create: Option<(String, String)>,
    /// The traffic PUT number N (1-based) ends Failed.
    pub fail_traffic_update: Option<u32>,
    /// The traffic PUT number N (1-based) is throttled: 429 with a long Retry-After.
    pub throttle_traffic_update: Option<u32>,
    /// Every endpoint PUT is refused (403), e.g. a missing role assignment.
    pub refuse_endpoint_puts: bool,
    /// Every DELETE is refused (409 ScopeLocked), e.g. a resource lock.
    pub refuse_deletes: bool,
    traffic_attempts: u32,
    traffic_updates: u32,
    /// A network fault injected into matching requests (the fault matrix, tests/api/faults.rs).
    pub injection: Option<Injection>,
    /// An action run when a request first matches (the fault matrix).
    pub hook: Option<Hook>,
    /// Scoring status per deployment (default 200).
    pub scoring_status: HashMap<String, u16>,
    /// Scoring answer body per deployment, as text (default a JSON prediction).
    pub scoring_body: HashMap<String, String>,
    /// Every request, as "METHOD /path" (no query).
    pub requests: Vec<String>,
    /// Traffic PUT bodies, in order: (traffic, mirror).
    pub traffic_puts: Vec<(BTreeMap<String, u32>, BTreeMap<String, u32>)>,
    /// Deployment PUT bodies, in order.
    pub deployment_puts: Vec<Value>,
    /// Scoring calls: (deployment header, authorization header).
    pub scoring_calls: Vec<(String, String)>,
    /// Rules the client broke.
    pub violations: Vec<String>,
    /// Model versions: (name, version) → `properties` (tags, properties, jobName).
    pub models: BTreeMap<(String, String), Value>,
    /// Model versions' `systemData`, when set through [`FakeArm::set_model`].
    pub model_system: BTreeMap<(String, String), Value>,
    /// MLflow runs by id (the `run` object of `runs/get`).
    pub runs: BTreeMap<String, Value>,
    /// The next N MLflow calls answer 503.
    pub mlflow_failures: u32,
    /// Every MLflow call, as "METHOD path?query".
    pub mlflow_calls: Vec<String>,
    /// Azure Monitor's metrics for the endpoints (tests/common/fake_monitor.rs).
    pub monitor: crate::fake_monitor::MonitorState,
    /// The endpoints' `scoringUri` (default: this fake's `/score`).
    pub scoring_uri: Option<String>,
    /// Code, environment and data versions (tests/common/fake_assets.rs).
    pub assets: crate::fake_assets::AssetState,
    /// Deployment PUTs must reference only registered assets (tests that register them).
    pub check_asset_references: bool,
    /// A traffic update takes effect when it is accepted, whether or not anyone polls its
    /// operation (as ARM does); its operation still reports done on the first poll.
    pub traffic_at_once: bool,
    /// Every request waits this long before it is handled (so concurrent callers overlap).
    pub latency: std::time::Duration,
    /// Requests with this method whose path matches wait this long more (e.g. a slow DELETE).
    pub slow: Option<(&'static str, PathMatch, std::time::Duration)>,
    /// Every accepted change, in order.
    pub changes: Vec<Change>,
    /// Container logs by (deployment, container type): `getLogs` answers their last `tail` lines.
    pub logs: BTreeMap<(String, String), String>,
    /// `getLogs` answers this instead (status, content type, body): a failure, or not JSON.
    pub logs_override: Option<(u16, &'static str, Vec<u8>)>,
    /// `getLogs` bodies, in order: (deployment, body).
    pub log_requests: Vec<(String, Value)>,
    /// Batch endpoints, deployments and jobs (tests/common/fake_batch.rs).
    pub batch: crate::fake_batch::BatchState,
    base: String,
}

impl ArmState {
    /// This fake's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }
}

#[derive(Clone)]
pub struct FakeArm {
    pub state: Arc<Mutex<ArmState>>,
    pub uri: String,
    _task: Arc<tokio::task::JoinHandle<()>>,
}

impl FakeArm {
    pub async fn start() -> FakeArm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ArmState {
            create_polls: 2,
            base: uri.clone(),
            ..ArmState::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeArm {
            state,
            uri,
            _task: Arc::new(task),
        }
    }

    /// An endpoint with live deployments `(name, model version, traffic)` of model `credit-risk`.
    pub fn add_endpoint(&self, name: &str, deployments: &[(&str, &str, u32)]) {
        let mut s = self.state.lock().unwrap();
        let mut endpoint = Endpoint {
            auth_mode: "Key".into(),
            ..Endpoint::default()
        };
        for (dep, version, traffic) in deployments {
            s.deployments.insert(
                (name.to_string(), dep.to_string()),
                Deployment {
                    model: format!("{WS}/models/credit-risk/versions/{version}"),
                    provisioning: "Succeeded".into(),
                },
            );
            if *traffic > 0 {
                endpoint.traffic.insert(dep.to_string(), *traffic);
            }
        }
        s.endpoints.insert(name.to_string(), endpoint);
    }

    /// Switches an endpoint's `authMode` (`Key`, `AMLToken`, `AADToken`).
    pub fn set_auth_mode(&self, endpoint: &str, mode: &str) {
        self.state
            .lock()
            .unwrap()
            .endpoints
            .get_mut(endpoint)
            .unwrap()
            .auth_mode = mode.to_string();
    }

    /// The model version of every deployment PUT, in order.
    pub fn created_versions(&self) -> Vec<String> {
        self.with(|s| {
            s.deployment_puts
                .iter()
                .map(|b| {
                    b["properties"]["model"]
                        .as_str()
                        .unwrap()
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .to_string()
                })
                .collect()
        })
    }

    pub fn traffic(&self, endpoint: &str) -> BTreeMap<String, u32> {
        self.state.lock().unwrap().endpoints[endpoint]
            .traffic
            .clone()
    }

    pub fn deployment_names(&self, endpoint: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .deployments
            .keys()
            .filter(|(e, _)| e == endpoint)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Registers model `credit-risk` version `version` with these tags (and a training job), by
    /// [`REGISTRAR`]; when it exists, changes its tags as [`APPROVER`] (systemData follows).
    pub fn add_model(&self, version: &str, tags: Value, job: Option<&str>) {
        self.set_model(version, tags, job, APPROVER);
    }

    /// [`FakeArm::add_model`], changed by `by` when the version exists.
    pub fn set_model(&self, version: &str, tags: Value, job: Option<&str>, by: &str) {
        let mut s = self.state.lock().unwrap();
        let key = ("credit-risk".to_string(), version.to_string());
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let system = match s.model_system.get(&key) {
            Some(old) => {
                let mut system = old.clone();
                system["lastModifiedAt"] = json!(now);
                system["lastModifiedBy"] = json!(by);
                system["lastModifiedByType"] = json!("User");
                system
            }
            None => json!({
                "createdAt": now, "createdBy": REGISTRAR, "createdByType": "User",
                "lastModifiedAt": now, "lastModifiedBy": REGISTRAR, "lastModifiedByType": "User"
            }),
        };
        s.model_system.insert(key.clone(), system);
        s.models
            .insert(key, json!({"tags": tags, "properties": {}, "jobName": job}));
    }

    /// An MLflow run with `metrics` and an optional parent.
    pub fn add_run(&self, id: &str, name: &str, parent: Option<&str>, metrics: &[(&str, f64)]) {
        let mut tags = vec![json!({"key": "mlflow.runName", "value": name})];
        if let Some(p) = parent {
            tags.push(json!({"key": "mlflow.parentRunId", "value": p}));
        }
        let metrics: Vec<Value> = metrics
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": 1, "step": 0}))
            .collect();
        self.state.lock().unwrap().runs.insert(
            id.to_string(),
            json!({"info": {"run_id": id, "run_name": name, "experiment_id": "7", "status": "FINISHED"},
                   "data": {"metrics": metrics, "tags": tags}}),
        );
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// The deployments created, in order (one entry per accepted PUT).
    pub fn created_deployments(&self) -> Vec<String> {
        self.with(|s| {
            s.changes
                .iter()
                .filter_map(|c| match c {
                    Change::Create(d) => Some(d.clone()),
                    _ => None,
                })
                .collect()
        })
    }

    /// Where two rollouts ran on the endpoint at once: a rollout runs from its deployment's PUT
    /// until that deployment gets 100% (promoted) or is deleted (rolled back); another deployment
    /// PUT meanwhile means two rollouts held the endpoint.
    pub fn overlapping_rollouts(&self) -> Vec<String> {
        self.with(|s| {
            let mut running: Option<String> = None;
            let mut overlaps = Vec::new();
            for change in &s.changes {
                match change {
                    Change::Create(d) => {
                        if let Some(other) = running.as_ref().filter(|o| *o != d) {
                            overlaps.push(format!("{d} created while {other} was rolling out"));
                        }
                        running = Some(d.clone());
                    }
                    Change::Traffic(traffic, _) => {
                        if running
                            .as_ref()
                            .is_some_and(|r| traffic.get(r) == Some(&100))
                        {
                            running = None;
                        }
                    }
                    Change::Delete(d) => {
                        if running.as_ref() == Some(d) {
                            running = None;
                        }
                    }
                }
            }
            overlaps
        })
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut ArmState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn percent_map(v: &Value) -> BTreeMap<String, u32> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n as u32)))
                .collect()
        })
        .unwrap_or_default()
}

async fn handle(
    State(state): State<Arc<Mutex<ArmState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let delay = {
        let s = state.lock().unwrap();
        let slow = s
            .slow
            .as_ref()
            .filter(|(m, p, _)| method.as_str() == *m && p.matches(&path))
            .map(|(_, _, d)| *d)
            .unwrap_or_default();
        s.latency + slow
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let fault = {
        let mut s = state.lock().unwrap();
        match s.injection.as_mut() {
            Some(injection) if injection.hits(&method, &path) => {
                injection.fired += 1;
                Some(injection.fault)
            }
            _ => None,
        }
    };
    let action = {
        let mut s = state.lock().unwrap();
        match s.hook.as_mut() {
            Some(hook)
                if !hook.fired && method.as_str() == hook.method && hook.path.matches(&path) =>
            {
                if hook.skip > 0 {
                    hook.skip -= 1;
                    None
                } else {
                    hook.fired = true;
                    Some(hook.action.clone())
                }
            }
            _ => None,
        }
    };
    if let Some(action) = action {
        action();
    }
    if let Some(fault) = fault {
        return injected(fault).await;
    }
    let mut s = state.lock().unwrap();
    s.requests.push(format!("{method} {path}"));
    if path.contains("/providers/Microsoft.Insights/metrics") {
        return crate::fake_monitor::handle(&mut s.monitor, &uri, &headers);
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let base = s.base.clone();

    if path == "/score" {
        let deployment = headers
            .get("azureml-model-deployment")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        s.scoring_calls.push((deployment.clone(), auth.clone()));
        let mode = s
            .endpoints
            .values()
            .next()
            .map(|e| e.auth_mode.clone())
            .unwrap_or_default();
        let expected = match mode.as_str() {
            "AMLToken" => "Bearer fake-aml-token",
            "AADToken" => "Bearer mi-token",
            _ => "Bearer fake-primary-key",
        };
        if auth != expected {
            return error(StatusCode::UNAUTHORIZED, "Unauthorized", "bad key");
        }
        let status = s.scoring_status.get(&deployment).copied().unwrap_or(200);
        if let Some(body) = s.scoring_body.get(&deployment) {
            return (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", "text/plain")],
                body.clone(),
            )
                .into_response();
        }
        return (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({"prediction": [1]})),
        )
            .into_response();
    }
    if let Some(rest) = path.strip_prefix(&format!("/mlflow/v1.0{WS}/api/2.0/mlflow/")) {
        s.mlflow_calls.push(format!(
            "{method} {rest}?{}",
            uri.query().unwrap_or_default()
        ));
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer mi-token") {
            s.violations
                .push("MLflow call without the ARM token".into());
        }
        if s.mlflow_failures > 0 {
            s.mlflow_failures -= 1;
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "try later",
            );
        }
        return match (method.as_str(), rest) {
            ("GET", "runs/get") => {
                let id = uri
                    .query()
                    .unwrap_or_default()
                    .split('&')
                    .find_map(|p| p.strip_prefix("run_id="))
                    .unwrap_or_default()
                    .to_string();
                match s.runs.get(&id) {
                    Some(run) => axum::Json(json!({"run": run})).into_response(),
                    None => error(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", "no run"),
                }
            }
            ("POST", "runs/search") => {
                let filter = body["filter"].as_str().unwrap_or_default().to_string();
                let parent = filter.split('\'').nth(1).unwrap_or_default().to_string();
                let runs: Vec<Value> = s
                    .runs
                    .values()
                    .filter(|r| {
                        r["data"]["tags"].as_array().is_some_and(|t| {
                            t.iter().any(|t| {
                                t["key"] == "mlflow.parentRunId" && t["value"] == parent.as_str()
                            })
                        })
                    })
                    .cloned()
                    .collect();
                axum::Json(json!({"runs": runs})).into_response()
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "ENDPOINT_NOT_FOUND",
                "no such MLflow API",
            ),
        };
    }
    if let Some(answer) = crate::fake_batch::handle(
        &mut s,
        &method,
        &path,
        uri.query().unwrap_or(""),
        &headers,
        &body,
    ) {
        return answer;
    }
    if let Some(id) = path.strip_prefix("/operations/") {
        return poll(&mut s, id, false);
    }
    if let Some(id) = path.strip_prefix("/locations/") {
        return poll(&mut s, id, true);
    }
    if !path.starts_with(WS) {
        return error(StatusCode::NOT_FOUND, "NotFound", "unknown path");
    }
    if uri
        .query()
        .is_none_or(|q| !q.contains("api-version=2025-12-01"))
    {
        s.violations
            .push(format!("{method} {path} without api-version=2025-12-01"));
    }
    let rest = &path[WS.len()..];
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(answer) =
        crate::fake_assets::handle(&mut s, &method, &parts, uri.query().unwrap_or(""), &body)
    {
        return answer;
    }
    match (method.as_str(), parts.as_slice()) {
        ("GET", []) => {
            let host = base.trim_start_matches("http://");
            axum::Json(json!({"id": WS, "name": "ml-ws", "location": "westeurope",
                "properties": {"mlFlowTrackingUri": format!("azureml://{host}/mlflow/v1.0{WS}")}}))
            .into_response()
        }
        ("GET", ["models", name, "versions", version]) => {
            match s.models.get(&(name.to_string(), version.to_string())) {
                None => error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "model version not found",
                ),
                Some(props) => axum::Json(json!({
                    "id": path, "name": version,
                    "systemData": s.model_system
                        .get(&(name.to_string(), version.to_string()))
                        .cloned()
                        .unwrap_or_else(|| json!({"createdAt": "2026-11-20T10:00:00Z"})),
                    "properties": props
                }))
                .into_response(),
            }
        }
        ("GET", ["onlineEndpoints", ep]) => match s.endpoints.get(*ep) {
            None => error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!("endpoint {ep} not found"),
            ),
            Some(e) => {
                let scoring = s
                    .scoring_uri
                    .clone()
                    .unwrap_or_else(|| format!("{base}/score"));
                axum::Json(endpoint_json(ep, e, &base, &scoring)).into_response()
            }
        },
        ("POST", ["onlineEndpoints", ep, "listKeys"]) if s.endpoints.contains_key(*ep) => {
            axum::Json(
                json!({"primaryKey": "fake-primary-key", "secondaryKey": "fake-secondary-key"}),
            )
            .into_response()
        }
        ("POST", ["onlineEndpoints", ep, "token"]) if s.endpoints.contains_key(*ep) => {
            axum::Json(json!({"accessToken": "fake-aml-token", "tokenType": "Bearer"}))
                .into_response()
        }
        ("PUT", ["onlineEndpoints", ep]) => put_endpoint(&mut s, ep, &body),
        ("GET", ["onlineEndpoints", ep, "deployments", dep]) => {
            match s.deployments.get(&(ep.to_string(), dep.to_string())) {
                None => error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "deployment not found",
                ),
                Some(d) => axum::Json(json!({
                    "id": format!("{path}"), "name": dep, "location": "westeurope",
                    "systemData": {"createdAt": "2026-11-20T10:00:00Z"},
                    "properties": {"model": d.model, "provisioningState": d.provisioning},
                    "sku": {"name": "Default", "capacity": 1}
                }))
                .into_response(),
            }
        }
        ("PUT", ["onlineEndpoints", ep, "deployments", dep]) => {
            put_deployment(&mut s, ep, dep, &body)
        }
        ("POST", ["onlineEndpoints", ep, "deployments", dep, "getLogs"]) => {
            get_logs(&mut s, ep, dep, &body)
        }
        ("DELETE", ["onlineEndpoints", ep, "deployments", dep]) => {
            if s.refuse_deletes {
                return error(
                    StatusCode::CONFLICT,
                    "ScopeLocked",
                    "The scope cannot perform delete operation because of a lock",
                );
            }
            let Some(e) = s.endpoints.get(*ep) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "endpoint not found",
                );
            };
            if e.traffic.get(*dep).copied().unwrap_or(0) > 0
                || e.mirror.get(*dep).copied().unwrap_or(0) > 0
            {
                s.violations
                    .push(format!("DELETE of {dep}, which still has traffic"));
                return error(
                    StatusCode::CONFLICT,
                    "BadRequest",
                    "A deployment with traffic cannot be deleted",
                );
            }
            if !s
                .deployments
                .contains_key(&(ep.to_string(), dep.to_string()))
            {
                return StatusCode::NO_CONTENT.into_response();
            }
            s.changes.push(Change::Delete(dep.to_string()));
            let id = new_op(
                &mut s,
                1,
                None,
                Effect::Delete {
                    endpoint: ep.to_string(),
                    deployment: dep.to_string(),
                },
            );
            (
                StatusCode::ACCEPTED,
                [
                    ("location", format!("{base}/locations/{id}")),
                    ("retry-after", "0".into()),
                ],
            )
                .into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no route for {method} {rest}"),
        ),
    }
}

/// `OnlineDeployments_GetLogs` (2025-12-01): `DeploymentLogsRequest {containerType, tail}` in,
/// `DeploymentLogs {content}` out; only for a deployment that exists.
fn get_logs(s: &mut ArmState, ep: &str, dep: &str, body: &Value) -> Response {
    s.log_requests.push((dep.to_string(), body.clone()));
    let container = body["containerType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !matches!(container.as_str(), "InferenceServer" | "StorageInitializer") {
        s.violations
            .push(format!("getLogs with containerType {container:?}"));
    }
    let Some(tail) = body["tail"].as_u64() else {
        s.violations
            .push(format!("getLogs without an integer tail: {body}"));
        return error(StatusCode::BAD_REQUEST, "BadRequest", "tail");
    };
    if let Some((status, content_type, bytes)) = s.logs_override.clone() {
        return (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", content_type)],
            bytes,
        )
            .into_response();
    }
    if !s
        .deployments
        .contains_key(&(ep.to_string(), dep.to_string()))
    {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "deployment not found",
        );
    }
    let text = s
        .logs
        .get(&(dep.to_string(), container))
        .cloned()
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(tail as usize);
    axum::Json(json!({"content": lines[from..].join("\n")})).into_response()
}

fn endpoint_json(name: &str, e: &Endpoint, base: &str, scoring: &str) -> Value {
    json!({
        "id": format!("{WS}/onlineEndpoints/{name}"), "name": name, "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
        "location": "westeurope", "identity": {"type": "SystemAssigned"}, "kind": "Managed", "tags": {},
        "properties": {
            "authMode": e.auth_mode, "description": "test endpoint",
            "traffic": e.traffic, "mirrorTraffic": e.mirror,
            "provisioningState": "Succeeded", "scoringUri": scoring, "swaggerUri": format!("{base}/swagger.json")
        }
    })
}

fn new_op(
    s: &mut ArmState,
    polls: u32,
    failure: Option<(String, String)>,
    effect: Effect,
) -> String {
    s.next_op += 1;
    let id = format!("op{}", s.next_op);
    s.ops.insert(
        id.clone(),
        Op {
            polls_left: polls,
            failure,
            effect,
            done: false,
            applied: false,
        },
    );
    id
}

/// Applies a traffic update to the endpoint.
fn set_traffic(
    s: &mut ArmState,
    endpoint: &str,
    traffic: &BTreeMap<String, u32>,
    mirror: &BTreeMap<String, u32>,
) {
    if let Some(e) = s.endpoints.get_mut(endpoint) {
        e.traffic = traffic
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        e.mirror = mirror
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
    }
}

fn put_endpoint(s: &mut ArmState, ep: &str, body: &Value) -> Response {
    if !s.endpoints.contains_key(ep) {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "endpoint not found",
        );
    }
    s.traffic_attempts += 1;
    if s.refuse_endpoint_puts {
        return error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "no write access to onlineEndpoints",
        );
    }
    if s.throttle_traffic_update == Some(s.traffic_attempts) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "3600")],
            axum::Json(json!({"error": {"code": "TooManyRequests", "message": "slow down"}})),
        )
            .into_response();
    }
    for read_only in ["provisioningState", "scoringUri", "swaggerUri"] {
        if body["properties"].get(read_only).is_some() {
            s.violations
                .push(format!("endpoint PUT carries read-only {read_only}"));
        }
    }
    let traffic = percent_map(&body["properties"]["traffic"]);
    let mirror = percent_map(&body["properties"]["mirrorTraffic"]);
    s.traffic_puts.push((traffic.clone(), mirror.clone()));
    let sum: u32 = traffic.values().sum();
    if sum != 0 && sum != 100 {
        s.violations
            .push(format!("traffic sums to {sum}: {traffic:?}"));
        return error(
            StatusCode::BAD_REQUEST,
            "BadArgument",
            "Traffic must sum to 0 or 100",
        );
    }
    for dep in traffic.keys().chain(mirror.keys()) {
        match s.deployments.get(&(ep.to_string(), dep.clone())) {
            Some(d) if d.provisioning == "Succeeded" => {}
            _ => {
                s.violations.push(format!(
                    "traffic to {dep}, which is not a Succeeded deployment"
                ));
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadArgument",
                    "Traffic can only go to succeeded deployments",
                );
            }
        }
    }
    if mirror.len() > 1
        || mirror.values().any(|v| *v > 50)
        || mirror
            .keys()
            .any(|d| traffic.get(d).copied().unwrap_or(0) > 0)
    {
        s.violations
            .push(format!("bad mirror {mirror:?} with traffic {traffic:?}"));
        return error(
            StatusCode::BAD_REQUEST,
            "BadArgument",
            "Mirror traffic: at most 50% to one deployment without live traffic",
        );
    }
    s.traffic_updates += 1;
    let failure = (s.fail_traffic_update == Some(s.traffic_updates)).then(|| {
        (
            "InternalServerError".to_string(),
            "traffic update failed".to_string(),
        )
    });
    s.changes
        .push(Change::Traffic(traffic.clone(), mirror.clone()));
    let at_once = s.traffic_at_once && failure.is_none();
    if at_once {
        set_traffic(s, ep, &traffic, &mirror);
    }
    let id = new_op(
        s,
        1,
        failure,
        Effect::Traffic {
            endpoint: ep.to_string(),
            traffic,
            mirror,
        },
    );
    if let Some(op) = s.ops.get_mut(&id) {
        op.applied = at_once;
    }
    let base = s.base.clone();
    (
        StatusCode::OK,
        [
            ("azure-asyncoperation", format!("{base}/operations/{id}")),
            ("retry-after", "0".into()),
        ],
        axum::Json(body.clone()),
    )
        .into_response()
}

fn put_deployment(s: &mut ArmState, ep: &str, dep: &str, body: &Value) -> Response {
    if !s.endpoints.contains_key(ep) {
        return error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "endpoint not found",
        );
    }
    s.deployment_puts.push(body.clone());
    // Fields and types of the official OnlineDeployments_CreateOrUpdate example.
    let p = &body["properties"];
    let mut problems = Vec::new();
    if body["location"].as_str().is_none_or(str::is_empty) {
        problems.push("location must be a non-empty string");
    }
    // az ml sends no capacity when the YAML has no instance_count.
    if !body["sku"]["name"].is_string()
        || !(body["sku"]["capacity"].is_u64() || body["sku"].get("capacity").is_none())
    {
        problems.push("sku must have name (string) and capacity (integer, or absent)");
    }
    if p["endpointComputeType"] != "Managed" {
        problems.push("properties.endpointComputeType must be Managed");
    }
    if !p["model"]
        .as_str()
        .is_some_and(|m| m.starts_with("/subscriptions/"))
    {
        problems.push("properties.model must be an ARM id");
    }
    if !p["instanceType"].is_string() {
        problems.push("properties.instanceType must be a string");
    }
    for duration in [
        &p["requestSettings"]["requestTimeout"],
        &p["requestSettings"]["maxQueueWait"],
        &p["livenessProbe"]["period"],
        &p["readinessProbe"]["initialDelay"],
    ] {
        if !duration.is_null() && !duration.as_str().is_some_and(|d| d.starts_with("PT")) {
            problems.push("durations must be ISO-8601 strings");
        }
    }
    if !p["requestSettings"].is_null()
        && !p["requestSettings"]["maxConcurrentRequestsPerInstance"].is_u64()
    {
        problems.push("requestSettings.maxConcurrentRequestsPerInstance must be an integer");
    }
    // Every field we send must exist in the official example body, with the same JSON type.
    let official: Value = serde_json::from_str(include_str!(
        "../fixtures/online_deployment_create_or_update.request_body.json"
    ))
    .unwrap();
    let mut shape_problems = Vec::new();
    same_shape(body, &official, "", &mut shape_problems);
    let reference_problems = if s.check_asset_references {
        crate::fake_assets::check_references(s, body)
    } else {
        Vec::new()
    };
    let shape_refs: Vec<&str> = shape_problems
        .iter()
        .chain(&reference_problems)
        .map(String::as_str)
        .collect();
    problems.extend(shape_refs);
    if !problems.is_empty() {
        s.violations
            .extend(problems.iter().map(|p| format!("deployment body: {p}")));
        return error(StatusCode::BAD_REQUEST, "BadArgument", &problems.join("; "));
    }
    let key = (ep.to_string(), dep.to_string());
    if s.endpoints[ep].traffic.get(dep).copied().unwrap_or(0) > 0 {
        s.violations
            .push(format!("PUT over {dep}, which serves traffic"));
    }
    if s.deployments
        .get(&key)
        .is_some_and(|d| d.provisioning == "Creating")
    {
        s.violations.push(format!(
            "a second PUT of {dep} while it is still provisioning"
        ));
    }
    s.changes.push(Change::Create(dep.to_string()));
    s.deployments.insert(
        key,
        Deployment {
            model: p["model"].as_str().unwrap().to_string(),
            provisioning: "Creating".into(),
        },
    );
    let failure = s.fail_next_create.take();
    let polls = s.create_polls;
    let id = new_op(
        s,
        polls,
        failure,
        Effect::Provision {
            endpoint: ep.to_string(),
            deployment: dep.to_string(),
        },
    );
    let base = s.base.clone();
    let mut response = body.clone();
    response["properties"]["provisioningState"] = json!("Creating");
    (
        StatusCode::CREATED,
        [
            ("azure-asyncoperation", format!("{base}/operations/{id}")),
            ("retry-after", "0".into()),
        ],
        axum::Json(response),
    )
        .into_response()
}

fn poll(s: &mut ArmState, id: &str, location: bool) -> Response {
    let Some(mut op) = s.ops.get(id).cloned() else {
        return error(StatusCode::NOT_FOUND, "NotFound", "no such operation");
    };
    let held = s.hold_operations || (s.hold_traffic && matches!(op.effect, Effect::Traffic { .. }));
    if !op.done && (op.polls_left > 1 || held) {
        op.polls_left = op.polls_left.saturating_sub(1).max(1);
        s.ops.insert(id.to_string(), op);
        return if location {
            (StatusCode::ACCEPTED, [("retry-after", "0")]).into_response()
        } else {
            (
                StatusCode::OK,
                [("retry-after", "0")],
                axum::Json(json!({"status": "InProgress"})),
            )
                .into_response()
        };
    }
    if !op.done {
        op.done = true;
        match (&op.effect, &op.failure) {
            (
                Effect::Provision {
                    endpoint,
                    deployment,
                },
                failure,
            ) => {
                if let Some(d) = s
                    .deployments
                    .get_mut(&(endpoint.clone(), deployment.clone()))
                {
                    d.provisioning = if failure.is_some() {
                        "Failed".into()
                    } else {
                        "Succeeded".into()
                    };
                }
            }
            (
                Effect::Traffic {
                    endpoint,
                    traffic,
                    mirror,
                },
                None,
            ) => {
                if !op.applied {
                    let (endpoint, traffic, mirror) =
                        (endpoint.clone(), traffic.clone(), mirror.clone());
                    set_traffic(s, &endpoint, &traffic, &mirror);
                }
            }
            (Effect::Traffic { .. }, Some(_)) => {}
            (
                Effect::Delete {
                    endpoint,
                    deployment,
                },
                _,
            ) => {
                s.deployments
                    .remove(&(endpoint.clone(), deployment.clone()));
            }
        }
        s.ops.insert(id.to_string(), op.clone());
    }
    if location {
        return StatusCode::OK.into_response();
    }
    match &op.failure {
        Some((code, message)) => {
            axum::Json(json!({"status": "Failed", "error": {"code": code, "message": message}}))
                .into_response()
        }
        None => axum::Json(json!({"status": "Succeeded"})).into_response(),
    }
}

/// Checks that every key of `ours` exists in `official` with the same JSON type. Maps whose keys are
/// names (`tags`, `environmentVariables`, `properties.properties`) are compared by value type only.
fn same_shape(ours: &Value, official: &Value, path: &str, problems: &mut Vec<String>) {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let free_keys = [
        "tags",
        "properties.environmentVariables",
        "properties.properties",
    ];
    match (ours, official) {
        (Value::Object(mine), Value::Object(_)) if free_keys.contains(&path) => {
            // az ml keeps each YAML scalar's JSON type here (`DEBUG: false`), though the REST
            // type is map<string, string>; anything but a scalar is wrong.
            for (k, v) in mine {
                if matches!(v, Value::Array(_) | Value::Object(_)) {
                    problems.push(format!("{path}.{k} is a {}, not a scalar", kind(v)));
                }
            }
        }
        (Value::Object(mine), Value::Object(theirs)) => {
            for (k, v) in mine {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                // In the REST API (2023-04-01-preview and later) though not in the example body.
                let rest_only = [
                    ("properties.dataCollector", "object"),
                    ("properties.egressPublicNetworkAccess", "string"),
                ];
                match theirs.get(k) {
                    None if rest_only.contains(&(child.as_str(), kind(v))) => {}
                    None => {
                        problems.push(format!("{child} is not a field of the official example"))
                    }
                    Some(t) => same_shape(v, t, &child, problems),
                }
            }
        }
        (mine, theirs) if kind(mine) != kind(theirs) => problems.push(format!(
            "{path} is a {}, the official example has a {}",
            kind(mine),
            kind(theirs)
        )),
        _ => {}
    }
}
