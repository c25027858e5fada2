//! The fake ARM's asset surface, as az ml uses it before a deployment (see
//! `shared/reference/az-ml-assets.md`): code versions (found by content hash, registered after a
//! pending upload), environment versions (PUT, the container's latest/next version, the `@latest`
//! listing by creation time) and data versions. Pending uploads are containers in the test's real
//! Azurite, reached through [`UploadProxy`], which records every request and can go away
//! mid-upload. Rule violations are recorded like the rest of the fake's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::events::WS;

/// One asset request: method, path below the workspace, query, body.
#[derive(Debug, Clone)]
pub struct AssetCall {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

#[derive(Debug, Default)]
pub struct AssetState {
    /// Code versions: (name, version) → stored resource.
    pub codes: BTreeMap<(String, String), Value>,
    /// Environment versions: (name, version) → (stored resource, creation order).
    pub environments: BTreeMap<(String, String), (Value, u32)>,
    /// Data versions: (name, version) → stored resource.
    pub data: BTreeMap<(String, String), Value>,
    created: u32,
    /// Where pending uploads go: the upload proxy's base (`http://…/devstoreaccount1`) and an
    /// account SAS for it.
    pub uploads: Option<(String, String)>,
    /// Every asset request, in order.
    pub calls: Vec<AssetCall>,
    /// Every asset write is refused (403), e.g. a missing role assignment.
    pub refuse_writes: bool,
    /// `startPendingUpload` calls so far.
    pub pending_uploads: usize,
    /// Container → the pendingUploadId it was made for.
    pub pending_upload_ids: BTreeMap<String, String>,
}

impl AssetState {
    /// A registered environment version (as if created earlier), in creation order.
    pub fn add_environment(&mut self, name: &str, version: &str) {
        self.created += 1;
        let id = format!("{WS}/environments/{name}/versions/{version}");
        self.environments.insert(
            (name.into(), version.into()),
            (
                json!({"id": id, "name": version, "properties": {"image": "mcr.microsoft.com/x"}}),
                self.created,
            ),
        );
    }

    /// The requests with `method` whose path contains `needle`.
    pub fn calls_to(&self, method: &str, needle: &str) -> Vec<AssetCall> {
        self.calls
            .iter()
            .filter(|c| c.method == method && c.path.contains(needle))
            .cloned()
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

/// The container a pending upload for code `name`/`version` gets.
pub fn container_for(name: &str) -> String {
    format!("up-{}", name.to_ascii_lowercase())
}

/// Handles `codes`, `environments` and `data` below the workspace (`parts` is the path after
/// it). `None`: not an asset path.
pub fn handle(
    s: &mut crate::fake_arm::ArmState,
    method: &Method,
    parts: &[&str],
    query: &str,
    body: &Value,
) -> Option<Response> {
    let kind = *parts.first()?;
    if !["codes", "environments", "data"].contains(&kind) {
        return None;
    }
    s.assets.calls.push(AssetCall {
        method: method.to_string(),
        path: parts.join("/"),
        query: query.to_string(),
        body: body.clone(),
    });
    let a = &mut s.assets;
    if a.refuse_writes && (method == Method::PUT || method == Method::POST) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "The client does not have authorization to perform action 'Microsoft.MachineLearningServices/workspaces/codes/versions/write'",
        ));
    }
    let id = format!("{WS}/{}", parts.join("/"));
    Some(match (method.as_str(), parts) {
        ("GET", ["codes", _, "versions"]) => {
            let hash = query_value(query, "hash");
            if query_value(query, "hashVersion").as_deref() != Some("202208") {
                s.violations
                    .push(format!("code lookup without hashVersion=202208: {query}"));
            }
            let found: Vec<Value> = a
                .codes
                .values()
                .filter(|c| {
                    hash.is_some()
                        && c["properties"]["properties"]["hash_sha256"].as_str() == hash.as_deref()
                })
                .cloned()
                .collect();
            axum::Json(json!({"value": found})).into_response()
        }
        ("GET", ["codes", name, "versions", version]) => {
            match a.codes.get(&(name.to_string(), version.to_string())) {
                Some(c) => axum::Json(c.clone()).into_response(),
                None => error(StatusCode::NOT_FOUND, "UserError", "code version not found"),
            }
        }
        ("POST", ["codes", name, "versions", _, "startPendingUpload"]) => {
            let id = body["pendingUploadId"].as_str().map(str::to_string);
            let expected_keys = if id.is_some() { 2 } else { 1 };
            if body["pendingUploadType"] != "TemporaryBlobReference"
                || body.as_object().map_or(0, |o| o.len()) != expected_keys
            {
                s.violations.push(format!("startPendingUpload body {body}"));
            }
            let Some((base, sas)) = a.uploads.clone() else {
                return Some(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "no upload storage configured in this test",
                ));
            };
            // As the service: the same pendingUploadId is the same container (with a fresh SAS);
            // without one, a random id and so a new container each time.
            a.pending_uploads += 1;
            let (container, id) = match id {
                Some(id) => (container_for(name), id),
                None => (
                    format!("{}-{}", container_for(name), a.pending_uploads),
                    format!("random-{}", a.pending_uploads),
                ),
            };
            if let Some(earlier) = a.pending_upload_ids.insert(container.clone(), id.clone())
                && earlier != id
            {
                s.violations
                    .push(format!("pendingUploadId {id} for a container of {earlier}"));
            }
            axum::Json(json!({
                "blobReferenceForConsumption": {
                    "blobUri": format!("{base}/{container}"),
                    "storageAccountArmId": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
                    "credential": {"credentialType": "SAS", "sasUri": format!("{base}/{container}?{sas}")}
                },
                "pendingUploadId": id,
                "pendingUploadType": "TemporaryBlobReference"
            }))
            .into_response()
        }
        ("PUT", ["codes", name, "versions", version]) => {
            let key = (name.to_string(), version.to_string());
            if a.codes.contains_key(&key) {
                return Some(error(
                    StatusCode::CONFLICT,
                    "UserError",
                    "A code version with this name and version already exists",
                ));
            }
            let stored =
                json!({"id": id, "name": version, "properties": body["properties"].clone()});
            a.codes.insert(key, stored.clone());
            (StatusCode::CREATED, axum::Json(stored)).into_response()
        }
        ("GET", ["environments", name]) => {
            let versions: Vec<(&String, u32)> = a
                .environments
                .iter()
                .filter(|((n, _), _)| n == name)
                .map(|((_, v), (_, order))| (v, *order))
                .collect();
            match versions.iter().max_by_key(|(_, order)| *order) {
                None => error(StatusCode::NOT_FOUND, "UserError", "environment not found"),
                Some((latest, _)) => {
                    let next = versions
                        .iter()
                        .filter_map(|(v, _)| v.parse::<u64>().ok())
                        .max()
                        .unwrap_or(0)
                        + 1;
                    axum::Json(json!({"id": id, "name": name,
                        "properties": {"latestVersion": latest, "nextVersion": next.to_string()}}))
                    .into_response()
                }
            }
        }
        ("GET", ["environments", name, "versions"]) => {
            if query_value(query, "$orderBy").as_deref() != Some("createdtime desc")
                || query_value(query, "$top").as_deref() != Some("1")
            {
                s.violations.push(format!(
                    "@latest listing without $orderBy=createdtime desc&$top=1: {query}"
                ));
            }
            let latest = a
                .environments
                .iter()
                .filter(|((n, _), _)| n == name)
                .max_by_key(|(_, (_, order))| *order)
                .map(|(_, (v, _))| v.clone());
            axum::Json(json!({"value": latest.into_iter().collect::<Vec<_>>()})).into_response()
        }
        ("PUT", ["environments", name, "versions", version]) => {
            let key = (name.to_string(), version.to_string());
            if let Some((existing, _)) = a.environments.get(&key) {
                // The service accepts the same definition again and refuses a different one.
                return Some(if existing["properties"] == body["properties"] {
                    axum::Json(existing.clone()).into_response()
                } else {
                    error(
                        StatusCode::CONFLICT,
                        "UserError",
                        "Conflict: an environment version with a different definition exists",
                    )
                });
            }
            a.created += 1;
            let stored =
                json!({"id": id, "name": version, "properties": body["properties"].clone()});
            a.environments.insert(key, (stored.clone(), a.created));
            (StatusCode::CREATED, axum::Json(stored)).into_response()
        }
        ("PUT", ["data", name, "versions", version]) => {
            let key = (name.to_string(), version.to_string());
            if a.data.contains_key(&key) {
                return Some(error(
                    StatusCode::CONFLICT,
                    "UserError",
                    &format!("Data version {name}:{version} already exists."),
                ));
            }
            let stored =
                json!({"id": id, "name": version, "properties": body["properties"].clone()});
            a.data.insert(key, stored.clone());
            (StatusCode::CREATED, axum::Json(stored)).into_response()
        }
        ("GET", ["data", name, "versions", version]) => {
            match a.data.get(&(name.to_string(), version.to_string())) {
                Some(d) => axum::Json(d.clone()).into_response(),
                None => error(StatusCode::NOT_FOUND, "UserError", "data version not found"),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no asset route for {method} {}", parts.join("/")),
        ),
    })
}

/// Checks that a deployment body references only assets the fake has registered (code, workspace
/// environments, data), so nothing is deployed that points at an asset not fully registered.
pub fn check_references(s: &crate::fake_arm::ArmState, body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let p = &body["properties"];
    let registered = |kind: &str, id: &str| -> bool {
        let rest = id.strip_prefix(&format!("{WS}/{kind}/")).unwrap_or("");
        let parts: Vec<&str> = rest.split('/').collect();
        let key = match parts.as_slice() {
            [name, "versions", version] => (name.to_string(), version.to_string()),
            _ => return false,
        };
        match kind {
            "codes" => s.assets.codes.contains_key(&key),
            "environments" => s.assets.environments.contains_key(&key),
            _ => s.assets.data.contains_key(&key),
        }
    };
    if let Some(id) = p["codeConfiguration"]["codeId"].as_str()
        && id.starts_with(WS)
        && !registered("codes", id)
    {
        problems.push(format!("deployment references unregistered code {id}"));
    }
    if let Some(id) = p["environmentId"].as_str()
        && id.starts_with(WS)
        && !registered("environments", id)
    {
        problems.push(format!(
            "deployment references unregistered environment {id}"
        ));
    }
    if let Some(collections) = p["dataCollector"]["collections"].as_object() {
        for c in collections.values() {
            if let Some(id) = c["dataId"].as_str()
                && !registered("data", id)
            {
                problems.push(format!("deployment references unregistered data {id}"));
            }
        }
    }
    problems
}

fn query_value(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Azurite's account, for minting SAS tokens and reading what was uploaded.
#[derive(Debug, Clone)]
pub struct Azurite {
    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    pub blob_endpoint: String,
    account: String,
    key: Vec<u8>,
}

impl Azurite {
    /// From the connection string `scripts/test.sh` exports.
    pub fn from_connection_string(connection: &str) -> Azurite {
        let part = |name: &str| {
            connection
                .split(';')
                .find_map(|p| p.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} missing from the connection string"))
                .to_string()
        };
        Azurite {
            blob_endpoint: part("BlobEndpoint").trim_end_matches('/').to_string(),
            account: part("AccountName"),
            key: base64::engine::general_purpose::STANDARD
                .decode(part("AccountKey"))
                .unwrap(),
        }
    }

    /// An account SAS (blob service; service, container and object; read, write, delete, list,
    /// add, create) valid for an hour, as the query string of a URL. Signed as the Storage service
    /// documents ("Create an account SAS", version 2020-12-06 and later).
    pub fn account_sas(&self) -> String {
        let expiry = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let expiry = expiry
            .split('.')
            .next()
            .unwrap()
            .trim_end_matches('Z')
            .to_string()
            + "Z";
        let (permissions, services, types, protocol, version) =
            ("rwdlac", "b", "sco", "https,http", "2021-08-06");
        let to_sign = format!(
            "{}\n{permissions}\n{services}\n{types}\n\n{expiry}\n\n{protocol}\n{version}\n\n",
            self.account
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).unwrap();
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("sv", version)
            .append_pair("ss", services)
            .append_pair("srt", types)
            .append_pair("sp", permissions)
            .append_pair("se", &expiry)
            .append_pair("spr", protocol)
            .append_pair("sig", &signature);
        query.finish()
    }

    /// Creates a container (through the SAS).
    pub async fn create_container(&self, name: &str) {
        let url = format!(
            "{}/{name}?restype=container&{}",
            self.blob_endpoint,
            self.account_sas()
        );
        let status = reqwest::Client::new()
            .put(url)
            .header("x-ms-version", "2021-08-06")
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            status.is_success() || status == reqwest::StatusCode::CONFLICT,
            "create container {name}: {status}"
        );
    }

    /// Blob names in a container.
    pub async fn list(&self, container: &str) -> Vec<String> {
        let url = format!(
            "{}/{container}?restype=container&comp=list&{}",
            self.blob_endpoint,
            self.account_sas()
        );
        let text = reqwest::Client::new()
            .get(url)
            .header("x-ms-version", "2021-08-06")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut names: Vec<String> = text
            .split("<Name>")
            .skip(1)
            .filter_map(|s| s.split("</Name>").next())
            .map(|s| {
                s.replace("&amp;", "&")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
            })
            .collect();
        names.sort();
        names
    }

    /// A blob's bytes and its metadata (`x-ms-meta-*`, names without the prefix).
    pub async fn blob(&self, container: &str, name: &str) -> (Vec<u8>, BTreeMap<String, String>) {
        let mut url = reqwest::Url::parse(&format!("{}/{container}", self.blob_endpoint)).unwrap();
        url.path_segments_mut().unwrap().extend(name.split('/'));
        url.set_query(Some(&self.account_sas()));
        let response = reqwest::Client::new()
            .get(url)
            .header("x-ms-version", "2021-08-06")
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "GET {name}: {}",
            response.status()
        );
        let metadata = response
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                k.as_str()
                    .strip_prefix("x-ms-meta-")
                    .map(|k| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            })
            .collect();
        (response.bytes().await.unwrap().to_vec(), metadata)
    }
}

/// What the upload proxy saw and does.
#[derive(Debug, Default)]
pub struct ProxyState {
    /// Every request: "METHOD /path" (no query).
    pub requests: Vec<String>,
    /// Requests that carried an `Authorization` header (none may: the SAS is the authorization).
    pub authorized: Vec<String>,
    /// Blob writes answered so far: Put Blob and Put Block List (one per file).
    pub blob_puts: usize,
    /// Put Block requests answered so far.
    pub block_puts: usize,
    /// Put Blob and Put Block List requests received so far.
    pub file_puts_arrived: usize,
    /// After this many Put Block requests arrived, the container goes away (as `fail_after_puts`).
    pub fail_after_blocks: Option<usize>,
    /// Put Block requests received so far.
    pub blocks_arrived: usize,
    /// Every PUT waits this long before it is forwarded (a slow link).
    pub put_delay: Option<std::time::Duration>,
    /// After this many blob PUTs, the container goes away: every request fails at the connection.
    pub fail_after_puts: Option<usize>,
    /// Every request is refused with 403 (the SAS not accepted, e.g. storage network rules).
    pub refuse: bool,
    containers: std::collections::HashSet<String>,
}

/// A loopback HTTP proxy in front of Azurite for pending uploads: the "storage account" the fake
/// ARM's `startPendingUpload` points at. It records what reaches storage, and can go down
/// mid-upload (connections closed without an answer, as when the account is unreachable).
#[derive(Clone)]
pub struct UploadProxy {
    pub state: Arc<Mutex<ProxyState>>,
    /// `http://127.0.0.1:PORT/devstoreaccount1`: the blob endpoint through the proxy.
    pub blob_endpoint: String,
    _task: Arc<tokio::task::JoinHandle<()>>,
}

impl UploadProxy {
    pub async fn start(azurite: &Azurite) -> UploadProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = reqwest::Url::parse(&azurite.blob_endpoint).unwrap();
        let origin = format!(
            "{}://{}:{}",
            upstream.scheme(),
            upstream.host_str().unwrap(),
            upstream.port().unwrap()
        );
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = (
            state.clone(),
            origin,
            reqwest::Client::new(),
            azurite.clone(),
        );
        // Blocks are up to 4 MiB.
        let app = Router::new()
            .fallback(forward)
            .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
            .with_state(Arc::new(shared));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        UploadProxy {
            state,
            blob_endpoint: format!("http://{addr}{}", upstream.path().trim_end_matches('/')),
            _task: Arc::new(task),
        }
    }
}

type ProxyShared = (Arc<Mutex<ProxyState>>, String, reqwest::Client, Azurite);

async fn forward(
    State(shared): State<Arc<ProxyShared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (state, origin, client, azurite) = &*shared;
    {
        let mut s = state.lock().unwrap();
        let line = format!("{method} {}", uri.path());
        s.requests.push(line.clone());
        if headers.contains_key("authorization") {
            s.authorized.push(line);
        }
        if s.refuse {
            return (
                StatusCode::FORBIDDEN,
                [("x-ms-error-code", "AuthorizationFailure")],
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthorizationFailure</Code><Message>This request is not authorized to perform this operation.</Message></Error>",
            )
                .into_response();
        }
        // Counted as they arrive: with requests in flight together, later ones find it down.
        if s.fail_after_puts.is_some_and(|n| s.file_puts_arrived >= n) {
            drop(s);
            // Unwinding the connection's task drops the socket without an answer.
            panic!("upload proxy: storage is down");
        }
        if s.fail_after_blocks.is_some_and(|n| s.blocks_arrived >= n) {
            drop(s);
            panic!("upload proxy: storage is down");
        }
        let query = uri.query().unwrap_or_default();
        if method == Method::PUT && (!query.contains("comp=") || query.contains("comp=blocklist")) {
            s.file_puts_arrived += 1;
        } else if method == Method::PUT && query.contains("comp=block") {
            s.blocks_arrived += 1;
        }
    }
    let delay = state.lock().unwrap().put_delay;
    if let Some(delay) = delay.filter(|_| method == Method::PUT) {
        tokio::time::sleep(delay).await;
    }
    // The service creates a pending upload's container; here it appears on first use.
    let container = uri.path().split('/').nth(2).unwrap_or_default().to_string();
    let fresh = {
        let mut s = state.lock().unwrap();
        container.starts_with("up-") && s.containers.insert(container.clone())
    };
    if fresh {
        azurite.create_container(&container).await;
    }
    let url = format!(
        "{origin}{}",
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let empty = body.is_empty();
    let mut request = client.request(method.clone(), url).body(body.to_vec());
    if empty && method == Method::PUT {
        // Storage wants the length even of an empty blob; reqwest omits it for an empty body.
        request = request.header("content-length", "0");
    }
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let Ok(answer) = request.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let query = uri.query().unwrap_or_default();
    if method == Method::PUT && status.is_success() {
        if !query.contains("comp=") || query.contains("comp=blocklist") {
            state.lock().unwrap().blob_puts += 1;
        } else if query.contains("comp=block") {
            state.lock().unwrap().block_puts += 1;
        }
    }
    let mut response = Response::builder().status(status);
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" && name != "content-length" {
            response = response.header(name.as_str(), value.as_bytes());
        }
    }
    response
        .body(axum::body::Body::from(
            answer.bytes().await.unwrap_or_default(),
        ))
        .unwrap()
}
