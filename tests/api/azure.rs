//! The Azure access layer: the ARM client against a loopback fake (long-running operations,
//! Retry-After, errors verbatim, the token allowlist), credentials selected and cached, and
//! `evaluate` end to end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use aml_autodeploy::azure::arm::{ArmClient, ArmError, ArmSettings, Operation};
use aml_autodeploy::azure::{CachedCredential, Cloud, CredentialKind};
use aml_autodeploy::event::WorkspaceId;

use crate::helpers::*;

const DEPLOYMENT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ml-ws/onlineEndpoints/credit-ep/deployments/green";

#[derive(Debug, Default)]
struct CountingCredential(AtomicUsize);

#[async_trait::async_trait]
impl TokenCredential for CountingCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        assert_eq!(scopes, ["https://management.azure.com/.default"]);
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        Ok(AccessToken::new(
            format!("arm-token-{n}"),
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

fn arm_client(server: &MockServer) -> (ArmClient, Arc<CountingCredential>) {
    let counting = Arc::new(CountingCredential::default());
    let cached = Arc::new(CachedCredential::new(
        CredentialKind::ManagedIdentity,
        counting.clone(),
    ));
    let client = ArmClient::new(
        &ArmSettings {
            cloud: Cloud::Public,
            endpoint: server.uri(),
            api_version: "2025-12-01".into(),
            budget: Duration::from_secs(5),
        },
        cached,
        aml_autodeploy::http::Http::new(),
    )
    .unwrap();
    (client, counting)
}

fn workspace() -> WorkspaceId {
    WorkspaceId::parse(WS).unwrap()
}

#[tokio::test]
async fn a_put_follows_azure_async_operation_until_succeeded_honouring_retry_after() {
    let arm = MockServer::start().await;
    let operation_url = format!(
        "{}/providers/Microsoft.MachineLearningServices/locations/westeurope/mfeOperationsStatus/op1?api-version=2025-12-01",
        arm.uri()
    );
    Mock::given(method("PUT"))
        .and(path(DEPLOYMENT))
        .and(query_param("api-version", "2025-12-01"))
        .and(header("authorization", "Bearer arm-token-0"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("azure-asyncoperation", operation_url.as_str())
                .insert_header("retry-after", "1")
                .set_body_json(json!({"properties": {"provisioningState": "Creating"}})),
        )
        .expect(1)
        .mount(&arm)
        .await;
    Mock::given(method("GET"))
        .and(path("/providers/Microsoft.MachineLearningServices/locations/westeurope/mfeOperationsStatus/op1"))
        .respond_with(ResponseTemplate::new(200).insert_header("retry-after", "0").set_body_json(json!({"status": "InProgress"})))
        .up_to_n_times(2)
        .expect(2)
        .mount(&arm)
        .await;
    Mock::given(method("GET"))
        .and(path("/providers/Microsoft.MachineLearningServices/locations/westeurope/mfeOperationsStatus/op1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "Succeeded"})))
        .expect(1)
        .mount(&arm)
        .await;
    Mock::given(method("GET"))
        .and(path(DEPLOYMENT))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"name": "green", "properties": {"provisioningState": "Succeeded"}}),
        ))
        .expect(1)
        .mount(&arm)
        .await;
    let (client, tokens) = arm_client(&arm);

    let started = Instant::now();
    let operation = client
        .begin_put_online_deployment(
            &workspace(),
            "credit-ep",
            "green",
            &json!({"properties": {}}),
        )
        .await
        .unwrap();
    assert!(matches!(
        operation,
        Operation::Pending {
            via_location: false,
            ..
        }
    ));
    let done = client
        .wait(operation, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();

    assert_eq!(done["properties"]["provisioningState"], "Succeeded");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured"
    );
    assert_eq!(
        tokens.0.load(Ordering::SeqCst),
        1,
        "one token for five calls"
    );
}

#[tokio::test]
async fn a_failed_operation_surfaces_its_error_verbatim() {
    let arm = MockServer::start().await;
    let operation_url = format!("{}/operations/op2", arm.uri());
    Mock::given(method("PUT"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("azure-asyncoperation", operation_url.as_str())
                .insert_header("retry-after", "0"),
        )
        .mount(&arm)
        .await;
    Mock::given(method("GET"))
        .and(path("/operations/op2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "status": "Failed",
            "error": {"code": "QuotaExceeded", "message": "Not enough quota available for Standard_DS3_v2 in SubscriptionId 0000. Current usage/limit: 4/4."}
        })))
        .mount(&arm)
        .await;
    let (client, _) = arm_client(&arm);

    let operation = client.begin_put(DEPLOYMENT, &json!({})).await.unwrap();
    let error = client
        .wait(operation, Duration::from_secs(5))
        .await
        .unwrap_err();

    assert_eq!(
        error,
        ArmError::OperationFailed {
            status: "Failed".into(),
            code: "QuotaExceeded".into(),
            message: "Not enough quota available for Standard_DS3_v2 in SubscriptionId 0000. Current usage/limit: 4/4.".into(),
        }
    );
    assert!(!error.is_transient());
}

#[tokio::test]
async fn a_delete_follows_location_until_done() {
    let arm = MockServer::start().await;
    let location = format!("{}/operations/del1", arm.uri());
    Mock::given(method("DELETE"))
        .and(path(DEPLOYMENT))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("location", location.as_str())
                .insert_header("retry-after", "0"),
        )
        .expect(1)
        .mount(&arm)
        .await;
    Mock::given(method("GET"))
        .and(path("/operations/del1"))
        .respond_with(ResponseTemplate::new(202).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&arm)
        .await;
    Mock::given(method("GET"))
        .and(path("/operations/del1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&arm)
        .await;
    let (client, _) = arm_client(&arm);

    let operation = client
        .begin_delete_online_deployment(&workspace(), "credit-ep", "green")
        .await
        .unwrap();
    assert!(matches!(
        operation,
        Operation::Pending {
            via_location: true,
            ..
        }
    ));
    assert_eq!(
        client
            .wait(operation, Duration::from_secs(5))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_poll_url_on_a_foreign_host_is_refused_without_sending_a_token() {
    let arm = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let foreign = format!("{}/steal-the-token", elsewhere.uri());
    Mock::given(method("PUT"))
        .respond_with(
            ResponseTemplate::new(201).insert_header("azure-asyncoperation", foreign.as_str()),
        )
        .mount(&arm)
        .await;
    let (client, _) = arm_client(&arm);

    let error = client.begin_put(DEPLOYMENT, &json!({})).await.unwrap_err();

    assert!(
        matches!(error, ArmError::ForeignUrl(ref url) if url.contains("/steal-the-token")),
        "{error:?}"
    );
}

#[tokio::test]
async fn throttling_is_retried_after_the_requested_wait_and_errors_come_back_verbatim() {
    let arm = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/subscriptions/s/x"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&arm)
        .await;
    Mock::given(method("GET"))
        .and(path("/subscriptions/s/x"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&arm)
        .await;
    Mock::given(method("GET"))
        .and(path("/subscriptions/s/missing"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {"code": "ResourceNotFound", "message": "The Resource 'x' was not found."}})))
        .mount(&arm)
        .await;
    let (client, _) = arm_client(&arm);

    let started = Instant::now();
    assert_eq!(
        client.get("/subscriptions/s/x").await.unwrap(),
        json!({"ok": true})
    );
    assert!(started.elapsed() >= Duration::from_millis(950));
    let error = client.get("/subscriptions/s/missing").await.unwrap_err();
    assert!(error.is_not_found());
    assert!(
        error
            .to_string()
            .contains("ResourceNotFound: The Resource 'x' was not found."),
        "{error}"
    );
    assert_eq!(
        client
            .get_optional("/subscriptions/s/missing")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn list_keys_returns_redacted_keys() {
    let arm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{}/onlineEndpoints/credit-ep/listKeys", WS)))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"primaryKey": "pk-secret", "secondaryKey": "sk-secret"})),
        )
        .expect(1)
        .mount(&arm)
        .await;
    let (client, _) = arm_client(&arm);

    let keys = client.list_keys(&workspace(), "credit-ep").await.unwrap();

    use secrecy::ExposeSecret;
    assert_eq!(keys.primary.expose_secret(), "pk-secret");
    assert!(!format!("{keys:?}").contains("pk-secret"));
}

// ── evaluate, through the binary, with real credentials from azure_identity ──

async fn fake_arm_with_models(versions: &[&str]) -> MockServer {
    let arm = MockServer::start().await;
    for v in versions {
        Mock::given(method("GET"))
            .and(path(format!("{WS}/models/credit-risk/versions/{v}")))
            .and(query_param("api-version", "2025-12-01"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": format!("{WS}/models/credit-risk/versions/{v}"),
                "name": v,
                "systemData": {"createdAt": format!("2026-11-2{v}T10:00:00Z")},
                "properties": {"tags": {"stage": "production"}, "properties": {"framework": "sklearn"}, "jobName": "brave_run_1"}
            })))
            .mount(&arm)
            .await;
    }
    arm
}

async fn fake_managed_identity() -> MockServer {
    let mi = MockServer::start().await;
    let expires = (time::OffsetDateTime::now_utc().unix_timestamp() + 3600).to_string();
    Mock::given(method("GET"))
        .and(query_param("resource", "https://management.azure.com"))
        .and(header("x-identity-header", "identity-header-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            // The App Service protocol sends expires_on as a string.
            "access_token": "mi-arm-token", "expires_on": expires, "resource": "https://management.azure.com", "token_type": "Bearer"
        })))
        .expect(1)
        .mount(&mi)
        .await;
    mi
}

fn evaluate_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("autodeploy.yml"), standard_config()).unwrap();
    let mut all = vec!["evaluate"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_cli(dir.path(), &all, env);
    (code, format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn evaluate_dry_run_reads_the_model_from_arm_with_a_managed_identity_token_once() {
    let arm = fake_arm_with_models(&["1", "2", "3"]).await;
    let mi = fake_managed_identity().await;
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .expect(0)
        .mount(&gh)
        .await;
    let (arm_uri, mi_uri, gh_uri) = (arm.uri(), mi.uri(), gh.uri());

    let (code, out) = tokio::task::block_in_place(|| {
        evaluate_cli(
            &["credit-risk:1", "credit-risk:2", "credit-risk:3"],
            &[
                ("AUTODEPLOY_CREDENTIAL", "managed-identity"),
                ("IDENTITY_ENDPOINT", &mi_uri),
                ("IDENTITY_HEADER", "identity-header-secret"),
                ("AUTODEPLOY_ARM_ENDPOINT", &arm_uri),
                ("GITHUB_API_URL", &gh_uri),
                ("GITHUB_TOKEN", "ghp_x"),
            ],
        )
    });

    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Azure credential: managed-identity"), "{out}");
    assert_eq!(out.matches("\"decision\": \"dry_run\"").count(), 3, "{out}");
    assert!(
        out.contains("manually triggered: model credit-risk version 2"),
        "{out}"
    );
    assert!(
        out.contains("\"eventTime\": \"2026-11-22T10:00:00Z\""),
        "the registration time is the event time: {out}"
    );
    for request in arm.received_requests().await.unwrap() {
        assert_eq!(request.headers["authorization"], "Bearer mi-arm-token");
    }
    assert!(!out.contains("mi-arm-token") && !out.contains("identity-header-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn evaluate_execute_dispatches_and_records_the_attempt_as_manual() {
    let arm = fake_arm_with_models(&["4"]).await;
    let mi = fake_managed_identity().await;
    let gh = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/repos/contoso/ml-deploy/dispatches"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&gh)
        .await;
    let container = unique_container();
    let storage = azurite();
    let (arm_uri, mi_uri, gh_uri) = (arm.uri(), mi.uri(), gh.uri());
    let env = [
        ("IDENTITY_ENDPOINT", mi_uri.as_str()),
        ("IDENTITY_HEADER", "identity-header-secret"),
        ("AUTODEPLOY_ARM_ENDPOINT", arm_uri.as_str()),
        ("GITHUB_API_URL", gh_uri.as_str()),
        ("GITHUB_TOKEN", "ghp_x"),
        ("AUTODEPLOY_STORAGE", storage.as_str()),
        ("AUTODEPLOY_CONTAINER", container.as_str()),
    ];

    let (code, out) =
        tokio::task::block_in_place(|| evaluate_cli(&["credit-risk:4", "--execute"], &env));

    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Azure credential: managed-identity"),
        "selected from IDENTITY_ENDPOINT: {out}"
    );
    assert!(out.contains("GitHub accepted the dispatch"), "{out}");
    let record = ledger_record(&storage, &container, "credit-risk", "4").await;
    assert_eq!(record["state"], "dispatched");
    assert_eq!(record["attempts"][0]["trigger"], "manual");
    assert_eq!(record["event_time"], "2026-11-24T10:00:00Z");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_azure_cli_credential_is_used_when_selected_and_called_once() {
    let arm = fake_arm_with_models(&["5", "6"]).await;
    let gh = MockServer::start().await;
    // A stub `az` that answers like `az account get-access-token -o json` and counts its calls.
    let bin = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls");
    let az = bin.path().join("az");
    std::fs::write(
        &az,
        format!(
            "#!/bin/sh\necho x >> '{}'\necho '{{\"accessToken\":\"cli-arm-token\",\"expiresOn\":\"2099-01-01 00:00:00.000000\",\"expires_on\":4070908800,\"tokenType\":\"Bearer\"}}'\n",
            calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path_var = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let (arm_uri, gh_uri) = (arm.uri(), gh.uri());

    let (code, out) = tokio::task::block_in_place(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("autodeploy.yml"), standard_config()).unwrap();
        let output = std::process::Command::new(binary())
            .env_clear()
            .env("PATH", &path_var)
            .env("AUTODEPLOY_CREDENTIAL", "azure-cli")
            .env("AUTODEPLOY_ARM_ENDPOINT", &arm_uri)
            .env("GITHUB_API_URL", &gh_uri)
            .args(["evaluate", "credit-risk:5", "credit-risk:6"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    });

    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Azure credential: azure-cli"), "{out}");
    for request in arm.received_requests().await.unwrap() {
        assert_eq!(request.headers["authorization"], "Bearer cli-arm-token");
    }
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap().lines().count(),
        1,
        "az ran once for two ARM calls"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_secret_and_workload_identity_are_selected_by_their_settings() {
    let token_file = tempfile::NamedTempFile::new().unwrap();
    let file = token_file.path().to_str().unwrap();
    for (env, expected) in [
        (
            vec![
                ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_SECRET", "s3cret-value"),
            ],
            "client-secret",
        ),
        (
            vec![
                ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_FEDERATED_TOKEN_FILE", file),
            ],
            "workload-identity",
        ),
    ] {
        let mut env = env.clone();
        // No network here: the authority cannot answer, so the token request times out quickly.
        env.extend([
            ("AUTODEPLOY_ARM_ENDPOINT", "http://127.0.0.1:9"),
            ("AUTODEPLOY_RETRY_BUDGET_SECS", "1"),
        ]);
        let (code, out) = tokio::task::block_in_place(|| evaluate_cli(&["credit-risk:1"], &env));
        assert_ne!(code, 0);
        assert!(
            out.contains(&format!("Azure credential: {expected}")),
            "{out}"
        );
        assert!(out.contains("Azure credential: no token"), "{out}");
        assert!(!out.contains("s3cret-value"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn evaluate_without_a_workspace_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("autodeploy.yml"),
        "rules: [{name: a, models: ['*'], github: {repository: o/r, event_type: e}}]",
    )
    .unwrap();
    let (code, stdout, stderr) = run_cli(dir.path(), &["evaluate", "m:1"], &[]);
    assert_ne!(code, 0);
    assert!(
        format!("{stdout}{stderr}").contains("--workspace"),
        "{stdout}{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_for_a_url_that_receives_credentials_is_warned_at_start() {
    let app = TestApp::spawn(
        &crate::events::standard_config(),
        &[
            ("GITHUB_API_URL", "http://ghe.example.com/api/v3"),
            (
                "AUTODEPLOY_WEBHOOK_OPENID_METADATA_URL",
                "http://127.0.0.1:9/openid",
            ),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !app.stderr().contains("GITHUB_API_URL is plain http") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stderr = app.stderr();
    assert!(
        stderr.contains("warning: GITHUB_API_URL is plain http (ghe.example.com)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("AUTODEPLOY_WEBHOOK_OPENID_METADATA_URL is plain http"),
        "loopback is fine: {stderr}"
    );
}

#[tokio::test]
async fn arm_redirects_are_not_followed_and_an_error_quoting_the_token_is_redacted() {
    let arm = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let stolen = format!("{}/steal-the-token", elsewhere.uri());
    Mock::given(method("GET"))
        .and(path(DEPLOYMENT))
        .respond_with(ResponseTemplate::new(307).insert_header("location", stolen.as_str()))
        .mount(&arm)
        .await;
    Mock::given(method("PUT"))
        .respond_with(|request: &wiremock::Request| {
            let auth = request.headers["authorization"]
                .to_str()
                .unwrap()
                .to_string();
            ResponseTemplate::new(401).set_body_json(json!({"error": {
                "code": "InvalidAuthenticationToken",
                "message": format!("The token {auth} is invalid"),
            }}))
        })
        .mount(&arm)
        .await;
    let (client, _) = arm_client(&arm);

    let redirected = client.get(DEPLOYMENT).await.unwrap_err();
    let refused = client.begin_put(DEPLOYMENT, &json!({})).await.unwrap_err();

    assert!(
        matches!(redirected, ArmError::Http { status: 307, .. }),
        "{redirected:?}"
    );
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
    let shown = refused.to_string();
    assert!(
        shown.contains("The token Bearer [REDACTED] is invalid") && !shown.contains("arm-token-"),
        "{shown}"
    );
}
