//! The fake ARM's batch surface: batch endpoints (their default deployment), batch deployments
//! (long-running PUT and DELETE), the invoke on the endpoint's scoring URI that submits a batch
//! job, and the jobs themselves (`GET jobs/{name}`, `POST jobs/{name}/cancel`). It enforces what
//! the service and az ml do: the default switch is a PUT of the whole endpoint with only the
//! fields az ml sends (`location`, `tags`, `properties.{description, authMode, properties,
//! defaults}`), the default must be a `Succeeded` deployment of that endpoint, the default cannot
//! be deleted, a batch deployment body has the batch shape (model as an asset reference, compute
//! as an ARM id, no online fields), an invoke carries an Entra token, the deployment header and a
//! request id. Violations are recorded with the rest of the fake's.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::events::WS;

#[derive(Debug, Clone, Default)]
pub struct BatchEndpoint {
    pub default: Option<String>,
    pub auth_mode: String,
    pub tags: Value,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BatchDeployment {
    pub model: String,
    pub provisioning: String,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub deployment: String,
    pub input: Value,
    /// The statuses successive GETs answer; the last one stays.
    pub script: Vec<String>,
    pub error: Option<String>,
    pub gets: usize,
    pub canceled: bool,
}

#[derive(Debug, Clone)]
enum Effect {
    Provision(String, String),
    Default(String, Option<String>),
    Delete(String, String),
}

#[derive(Debug, Clone)]
struct Op {
    polls_left: u32,
    failure: Option<String>,
    effect: Effect,
    done: bool,
}

#[derive(Debug, Default)]
pub struct BatchState {
    pub endpoints: BTreeMap<String, BatchEndpoint>,
    pub deployments: BTreeMap<(String, String), BatchDeployment>,
    pub jobs: BTreeMap<String, Job>,
    ops: BTreeMap<String, Op>,
    next: u32,
    /// The statuses a new job's GETs answer (default: Running, then Completed).
    pub job_script: Vec<String>,
    /// The error a new job's services report (with a failing script).
    pub job_error: Option<String>,
    /// The next batch deployment PUT ends Failed.
    pub fail_next_create: bool,
    /// The default switch PUTs end Failed (the default does not move).
    pub fail_default_switch: bool,
    /// Endpoint PUT bodies, in order.
    pub endpoint_puts: Vec<Value>,
    /// Deployment PUT bodies, in order.
    pub deployment_puts: Vec<Value>,
    /// Invokes: (deployment header, body).
    pub invokes: Vec<(String, Value)>,
    /// Jobs canceled.
    pub cancels: Vec<String>,
}

impl BatchState {
    /// A batch endpoint whose default is `default` (a deployment of model `credit-risk`, `version`).
    pub fn add_endpoint(&mut self, name: &str, default: Option<(&str, &str)>) {
        if let Some((dep, version)) = default {
            self.deployments.insert(
                (name.into(), dep.into()),
                BatchDeployment {
                    model: format!("{WS}/models/credit-risk/versions/{version}"),
                    provisioning: "Succeeded".into(),
                },
            );
        }
        self.endpoints.insert(
            name.into(),
            BatchEndpoint {
                default: default.map(|(d, _)| d.to_string()),
                auth_mode: "AADToken".into(),
                tags: json!({"team": "risk"}),
                description: Some("nightly scoring".into()),
            },
        );
    }

    pub fn default_of(&self, endpoint: &str) -> Option<String> {
        self.endpoints[endpoint].default.clone()
    }

    pub fn deployment_names(&self, endpoint: &str) -> Vec<String> {
        self.deployments
            .keys()
            .filter(|(e, _)| e == endpoint)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn endpoint_json(name: &str, e: &BatchEndpoint, base: &str) -> Value {
    let mut properties = json!({
        "authMode": e.auth_mode,
        "properties": {"BatchEndpointCreationApiVersion": "2025-12-01"},
        "scoringUri": format!("{base}/batch/{name}/jobs"),
        "swaggerUri": format!("{base}/batch/{name}/swagger.json"),
        "provisioningState": "Succeeded",
    });
    if let Some(d) = &e.description {
        properties["description"] = json!(d);
    }
    if let Some(d) = &e.default {
        properties["defaults"] = json!({"deploymentName": d});
    }
    json!({
        "id": format!("{WS}/batchEndpoints/{name}"), "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/batchEndpoints",
        "location": "westeurope", "kind": "string", "tags": e.tags,
        "identity": {"type": "SystemAssigned", "principalId": "p", "tenantId": "t"},
        "properties": properties,
    })
}

fn new_op(b: &mut BatchState, polls: u32, failure: Option<String>, effect: Effect) -> String {
    b.next += 1;
    let id = format!("bop{}", b.next);
    b.ops.insert(
        id.clone(),
        Op {
            polls_left: polls,
            failure,
            effect,
            done: false,
        },
    );
    id
}

/// Answers the batch requests (below the workspace, the invoke, the batch operations); `None`
/// for anything else.
pub fn handle(
    s: &mut crate::fake_arm::ArmState,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Option<Response> {
    let base = s.base().to_string();
    let create_polls = s.create_polls;
    if let Some(id) = path.strip_prefix("/batch-operations/") {
        return Some(poll(&mut s.batch, id, false));
    }
    if let Some(id) = path.strip_prefix("/batch-locations/") {
        return Some(poll(&mut s.batch, id, true));
    }
    if let Some(rest) = path.strip_prefix("/batch/") {
        let endpoint = rest.trim_end_matches("/jobs").to_string();
        return Some(invoke(s, &endpoint, headers, body));
    }
    let rest = path.strip_prefix(WS)?;
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    if !matches!(parts.first(), Some(&"batchEndpoints") | Some(&"jobs")) {
        return None;
    }
    let reference_problems = if s.check_asset_references {
        crate::fake_assets::check_references(s, body)
    } else {
        Vec::new()
    };
    let mut violations = Vec::new();
    if !query.contains("api-version=2025-12-01") {
        violations.push(format!("{method} {path} without api-version=2025-12-01"));
    }
    let answer = route(
        &mut s.batch,
        &mut violations,
        method,
        path,
        &parts,
        body,
        &base,
        create_polls,
        reference_problems,
    );
    s.violations.extend(violations);
    answer
}

#[allow(clippy::too_many_arguments)]
fn route(
    b: &mut BatchState,
    violations: &mut Vec<String>,
    method: &Method,
    path: &str,
    parts: &[&str],
    body: &Value,
    base: &str,
    create_polls: u32,
    reference_problems: Vec<String>,
) -> Option<Response> {
    let answer = match (method.as_str(), parts) {
        ("GET", ["batchEndpoints", ep]) => match b.endpoints.get(*ep) {
            Some(e) => axum::Json(endpoint_json(ep, e, base)).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "batch endpoint not found",
            ),
        },
        ("PUT", ["batchEndpoints", ep]) => {
            let Some(e) = b.endpoints.get(*ep).cloned() else {
                return Some(error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "no such endpoint",
                ));
            };
            b.endpoint_puts.push(body.clone());
            let mut problems = Vec::new();
            let keys = |v: &Value| -> Vec<String> {
                v.as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default()
            };
            for key in keys(body) {
                if !["location", "tags", "properties"].contains(&key.as_str()) {
                    problems.push(format!(
                        "endpoint PUT carries {key}, which az ml does not send"
                    ));
                }
            }
            for key in keys(&body["properties"]) {
                if !["description", "authMode", "properties", "defaults"].contains(&key.as_str()) {
                    problems.push(format!("endpoint PUT carries properties.{key}"));
                }
            }
            if body["location"].as_str().is_none_or(str::is_empty) {
                problems.push("endpoint PUT without location".into());
            }
            let default = body["properties"]["defaults"]["deploymentName"]
                .as_str()
                .map(str::to_string);
            if let Some(d) = &default {
                match b.deployments.get(&(ep.to_string(), d.clone())) {
                    Some(dep) if dep.provisioning == "Succeeded" => {}
                    _ => {
                        problems.push(format!("default {d} is not a Succeeded deployment of {ep}"))
                    }
                }
            }
            if body["properties"]["authMode"]
                .as_str()
                .map(str::to_ascii_lowercase)
                != Some(e.auth_mode.to_ascii_lowercase())
            {
                problems.push("endpoint PUT changes authMode".into());
            }
            if !problems.is_empty() {
                violations.extend(problems.iter().cloned());
                return Some(error(
                    StatusCode::BAD_REQUEST,
                    "BadArgument",
                    &problems.join("; "),
                ));
            }
            let failure = b
                .fail_default_switch
                .then(|| "default switch failed".to_string());
            let id = new_op(b, 1, failure, Effect::Default(ep.to_string(), default));
            (
                StatusCode::OK,
                [
                    (
                        "azure-asyncoperation",
                        format!("{base}/batch-operations/{id}"),
                    ),
                    ("retry-after", "0".into()),
                ],
                axum::Json(body.clone()),
            )
                .into_response()
        }
        ("GET", ["batchEndpoints", ep, "deployments", dep]) => {
            match b.deployments.get(&(ep.to_string(), dep.to_string())) {
                Some(d) => axum::Json(json!({
                    "id": path, "name": dep,
                    "properties": {"model": {"referenceType": "Id", "assetId": d.model}, "provisioningState": d.provisioning}
                }))
                .into_response(),
                None => error(StatusCode::NOT_FOUND, "ResourceNotFound", "batch deployment not found"),
            }
        }
        ("PUT", ["batchEndpoints", ep, "deployments", dep]) => {
            if !b.endpoints.contains_key(*ep) {
                return Some(error(
                    StatusCode::NOT_FOUND,
                    "ResourceNotFound",
                    "no such endpoint",
                ));
            }
            b.deployment_puts.push(body.clone());
            let p = &body["properties"];
            let mut problems = reference_problems;
            if body["location"].as_str().is_none_or(str::is_empty) {
                problems.push("batch deployment without location".into());
            }
            if p["model"]["referenceType"] != "Id"
                || !p["model"]["assetId"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("/subscriptions/"))
            {
                problems
                    .push("properties.model must be {referenceType: Id, assetId: ARM id}".into());
            }
            if p.get("compute").is_some()
                && !p["compute"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("/subscriptions/") && c.contains("/computes/"))
            {
                problems.push("properties.compute must be a compute's ARM id".into());
            }
            for online in [
                "endpointComputeType",
                "instanceType",
                "requestSettings",
                "livenessProbe",
            ] {
                if p.get(online).is_some() {
                    problems.push(format!(
                        "batch deployment carries the online field {online}"
                    ));
                }
            }
            if body.get("sku").is_some() {
                problems.push("batch deployment carries sku".into());
            }
            if b.endpoints[*ep].default.as_deref() == Some(*dep) {
                problems.push(format!("PUT over {dep}, the endpoint's default"));
            }
            if !problems.is_empty() {
                violations.extend(
                    problems
                        .iter()
                        .map(|p| format!("batch deployment body: {p}")),
                );
                return Some(error(
                    StatusCode::BAD_REQUEST,
                    "BadArgument",
                    &problems.join("; "),
                ));
            }
            b.deployments.insert(
                (ep.to_string(), dep.to_string()),
                BatchDeployment {
                    model: p["model"]["assetId"].as_str().unwrap().to_string(),
                    provisioning: "Creating".into(),
                },
            );
            let failure =
                std::mem::take(&mut b.fail_next_create).then(|| "image build failed".to_string());
            let id = new_op(
                b,
                create_polls,
                failure,
                Effect::Provision(ep.to_string(), dep.to_string()),
            );
            let mut response = body.clone();
            response["properties"]["provisioningState"] = json!("Creating");
            (
                StatusCode::CREATED,
                [
                    (
                        "azure-asyncoperation",
                        format!("{base}/batch-operations/{id}"),
                    ),
                    ("retry-after", "0".into()),
                ],
                axum::Json(response),
            )
                .into_response()
        }
        ("DELETE", ["batchEndpoints", ep, "deployments", dep]) => {
            if b.endpoints.get(*ep).and_then(|e| e.default.as_deref()) == Some(*dep) {
                violations.push(format!("DELETE of {dep}, the endpoint's default"));
                return Some(error(
                    StatusCode::CONFLICT,
                    "BadRequest",
                    "the default deployment cannot be deleted",
                ));
            }
            if !b
                .deployments
                .contains_key(&(ep.to_string(), dep.to_string()))
            {
                return Some(StatusCode::NO_CONTENT.into_response());
            }
            let id = new_op(b, 1, None, Effect::Delete(ep.to_string(), dep.to_string()));
            (
                StatusCode::ACCEPTED,
                [
                    ("location", format!("{base}/batch-locations/{id}")),
                    ("retry-after", "0".into()),
                ],
            )
                .into_response()
        }
        ("GET", ["jobs", name]) => match b.jobs.get_mut(*name) {
            Some(job) => {
                let status = if job.canceled {
                    "Canceled".to_string()
                } else {
                    let i = job.gets.min(job.script.len().saturating_sub(1));
                    job.gets += 1;
                    job.script
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| "Completed".into())
                };
                let mut services = json!({"Studio": {"jobServiceType": "Studio", "endpoint": format!("https://ml.azure.com/runs/{name}")}});
                if status == "Failed"
                    && let Some(e) = &job.error
                {
                    services["Tracking"] = json!({"jobServiceType": "Tracking", "errorMessage": e});
                }
                axum::Json(json!({
                    "id": path, "name": name,
                    "properties": {"jobType": "Pipeline", "status": status, "services": services,
                        "properties": {"azureml.deploymentName": job.deployment}}
                }))
                .into_response()
            }
            None => error(StatusCode::NOT_FOUND, "UserError", "job not found"),
        },
        ("POST", ["jobs", name, "cancel"]) => match b.jobs.get_mut(*name) {
            Some(job) => {
                job.canceled = true;
                b.cancels.push(name.to_string());
                StatusCode::ACCEPTED.into_response()
            }
            None => error(StatusCode::NOT_FOUND, "UserError", "job not found"),
        },
        _ => return None,
    };
    Some(answer)
}

/// The invoke: the endpoint's scoring URI submits a job running the named deployment.
fn invoke(
    s: &mut crate::fake_arm::ArmState,
    endpoint: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let deployment = header("azureml-model-deployment");
    let mut problems = Vec::new();
    // The managed identity fake hands out "mi-token" for every audience; the SDK asks for the
    // Azure ML one (checked by the scope the token request named, in the MI mock's log).
    if header("authorization") != "Bearer mi-token" {
        problems.push("invoke without an Entra token".to_string());
    }
    if header("repeatability_request-id").len() != 36 {
        problems.push("invoke without a repeatability_request-id".into());
    }
    if header("content-type") != "application/json" {
        problems.push("invoke without Content-Type: application/json".into());
    }
    match s
        .batch
        .deployments
        .get(&(endpoint.to_string(), deployment.clone()))
    {
        Some(d) if d.provisioning == "Succeeded" => {}
        _ => problems.push(format!(
            "invoke of {deployment:?}, not a Succeeded deployment of {endpoint}"
        )),
    }
    let input = &body["properties"]["inputData"];
    let input_ok = input.as_object().is_some_and(|m| {
        m.len() == 1
            && m.iter().all(|(k, v)| {
                (k == "UriFolder" || k == "UriFile")
                    && v["jobInputType"] == k.as_str()
                    && v["uri"].is_string()
            })
    });
    if !input_ok {
        problems.push(format!(
            "invoke body without one UriFolder/UriFile input: {body}"
        ));
    }
    if !problems.is_empty() {
        s.violations.extend(problems.iter().cloned());
        return error(StatusCode::BAD_REQUEST, "BadRequest", &problems.join("; "));
    }
    let b = &mut s.batch;
    b.invokes.push((deployment.clone(), body.clone()));
    let name = body["properties"]["name"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("batchjob-{}", b.invokes.len()));
    if b.jobs.contains_key(&name) {
        return error(
            StatusCode::CONFLICT,
            "UserError",
            "a job with this name exists",
        );
    }
    let script = if b.job_script.is_empty() {
        vec!["Running".to_string(), "Completed".to_string()]
    } else {
        b.job_script.clone()
    };
    b.jobs.insert(
        name.clone(),
        Job {
            deployment,
            input: input.clone(),
            script,
            error: b.job_error.clone(),
            gets: 0,
            canceled: false,
        },
    );
    axum::Json(json!({
        "id": format!("{WS}/jobs/{name}"), "name": name,
        "type": "Microsoft.MachineLearningServices/workspaces/jobs",
        "properties": {"status": "NotStarted"}
    }))
    .into_response()
}

fn poll(b: &mut BatchState, id: &str, location: bool) -> Response {
    let Some(mut op) = b.ops.get(id).cloned() else {
        return error(StatusCode::NOT_FOUND, "NotFound", "no such operation");
    };
    if !op.done && op.polls_left > 1 {
        op.polls_left -= 1;
        b.ops.insert(id.to_string(), op);
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
            (Effect::Provision(ep, dep), failure) => {
                if let Some(d) = b.deployments.get_mut(&(ep.clone(), dep.clone())) {
                    d.provisioning = if failure.is_some() {
                        "Failed"
                    } else {
                        "Succeeded"
                    }
                    .into();
                }
            }
            (Effect::Default(ep, default), None) => {
                if let Some(e) = b.endpoints.get_mut(ep) {
                    e.default = default.clone();
                }
            }
            (Effect::Default(..), Some(_)) => {}
            (Effect::Delete(ep, dep), _) => {
                b.deployments.remove(&(ep.clone(), dep.clone()));
            }
        }
        b.ops.insert(id.to_string(), op.clone());
    }
    if location {
        return StatusCode::OK.into_response();
    }
    match &op.failure {
        Some(message) => axum::Json(
            json!({"status": "Failed", "error": {"code": "InternalServerError", "message": message}}),
        )
        .into_response(),
        None => axum::Json(json!({"status": "Succeeded"})).into_response(),
    }
}
