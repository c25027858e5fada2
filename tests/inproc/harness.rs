//! The application in process: `Settings::from_env` over a map, `startup::build_pipeline` with the
//! in-memory ledger (no storage is configured), and `routes::router` driven with `oneshot`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aml_autodeploy::azure::{CachedCredential, CredentialKind};
use aml_autodeploy::ledger::record_key;
use aml_autodeploy::pipeline::Pipeline;
use aml_autodeploy::routes::{AppState, router};
use aml_autodeploy::startup::Settings;
use aml_autodeploy::startup::{LedgerChoice, build_pipeline};
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt;
use wiremock::MockServer;

pub use crate::events::*;
use crate::fake_arm::FakeArm;

/// The fakes around the application: GitHub and Azure Resource Manager.
pub struct Fakes {
    /// GitHub's REST API.
    pub gh: MockServer,
    /// ARM (endpoints, deployments, models, MLflow) and the scoring URLs.
    pub arm: FakeArm,
}

impl Fakes {
    pub async fn start() -> Self {
        Self {
            gh: MockServer::start().await,
            arm: FakeArm::start().await,
        }
    }

    /// Fakes whose GitHub answers 204 to any request and must receive none (checked on drop).
    pub async fn expecting_no_github_call() -> Self {
        let fakes = Self::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(wiremock::ResponseTemplate::new(204))
            .expect(0)
            .mount(&fakes.gh)
            .await;
        fakes
    }

    /// Fakes whose GitHub accepts exactly `n` dispatches to the example repository.
    pub async fn expecting_dispatches(n: u64) -> Self {
        let fakes = Self::start().await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path(
                "/repos/contoso/ml-deploy/dispatches",
            ))
            .respond_with(wiremock::ResponseTemplate::new(204))
            .expect(n)
            .mount(&fakes.gh)
            .await;
        fakes
    }

    /// The settings every test starts from; `extra` pairs win.
    fn env(&self, config_path: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
        [
            ("AUTODEPLOY_CONFIG", config_path),
            ("GITHUB_API_URL", &self.gh.uri()),
            ("GITHUB_TOKEN", "ghp_inproc"),
            ("AUTODEPLOY_ARM_ENDPOINT", &self.arm.uri),
            ("AUTODEPLOY_MIN_STEP_SECS", "0"),
            ("AUTODEPLOY_RETRY_FIRST_DELAY_SECS", "0"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// The application: the pipeline `serve` would build from these settings and config.
pub struct App {
    pipeline: Arc<Pipeline>,
    _dir: tempfile::TempDir,
}

/// What the router answered.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub raw: String,
}

impl Reply {
    pub fn decision(&self) -> &str {
        self.body["ReturnValue"]["decision"].as_str().unwrap_or("")
    }

    pub fn logs_text(&self) -> String {
        self.body["Logs"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

/// An Azure credential that hands out `mi-token` (the managed identity of the black-box tests);
/// the SDK's credentials read the process environment, which tests never change.
#[derive(Debug)]
struct FakeToken;

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FakeToken {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            "mi-token",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

impl App {
    /// Builds the application for `config` (a rules file) with the fakes' settings plus `extra`.
    pub async fn start(fakes: &Fakes, config: &str, extra: &[(&str, &str)]) -> App {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("autodeploy.yml");
        std::fs::write(&config_path, config).unwrap();
        let env = fakes.env(config_path.to_str().unwrap(), extra);
        let mut settings = Settings::from_env(&|name: &str| env.get(name).cloned());
        settings.credential = Ok(Arc::new(CachedCredential::new(
            CredentialKind::ManagedIdentity,
            Arc::new(FakeToken),
        )));
        // No storage setting: the configured ledger is in memory, with the settings' timings
        // (a scratch ledger would keep the defaults: retries a minute apart).
        assert!(settings.storage.is_ok(), "{:?}", settings.storage);
        // As the CLI does before serving: the settings' secrets are redacted from upstream text.
        let http = aml_autodeploy::http::Http::new();
        http.redactor().add_all(&settings.secrets);
        let pipeline = build_pipeline(
            &settings,
            &settings.config_path,
            LedgerChoice::Configured,
            &http,
        );
        assert!(!pipeline.ledger().is_durable());
        App {
            pipeline: Arc::new(pipeline),
            _dir: dir,
        }
    }

    async fn call(&self, path: &str, body: String) -> Reply {
        let request = Request::post(path)
            .header("content-type", "application/json; charset=utf-8")
            .header(
                "x-azure-functions-invocationid",
                "11111111-2222-3333-4444-555555555555",
            )
            .body(Body::from(body))
            .unwrap();
        let response = router(AppState {
            pipeline: self.pipeline.clone(),
        })
        .oneshot(request)
        .await
        .expect("the router answers");
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            raw: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// `event` inside a host envelope, POSTed to `/ModelRegistered`.
    pub async fn post_event(&self, event: &Value) -> Reply {
        self.call("/ModelRegistered", envelope(event).to_string())
            .await
    }

    /// The timer's POST to `/Reconcile`.
    pub async fn post_reconcile(&self) -> Reply {
        let body = json!({ "Data": { "timer": { "IsPastDue": false } }, "Metadata": {} });
        self.call("/Reconcile", body.to_string()).await
    }

    /// The record of `model:version` in [`WS`], as JSON (what `status --json` prints), or `None`.
    pub async fn try_record(&self, model: &str, version: &str) -> Option<Value> {
        let key = record_key(WS, model, version);
        let loaded = self.pipeline.ledger().load(&key).await.expect("in memory");
        loaded.map(|(record, _)| serde_json::to_value(&record).expect("a record serializes"))
    }

    /// Edits the stored record of `model:version` (e.g. to move a step's start into the past).
    pub async fn edit_record(
        &self,
        model: &str,
        version: &str,
        edit: impl FnOnce(&mut aml_autodeploy::ledger::Record),
    ) {
        let key = record_key(WS, model, version);
        let ledger = self.pipeline.ledger();
        let (mut record, etag) = ledger.load(&key).await.unwrap().expect("a record");
        edit(&mut record);
        ledger.save(&record, &etag).await.unwrap();
    }

    /// The record of `model:version` in [`WS`], as JSON.
    pub async fn record(&self, model: &str, version: &str) -> Value {
        self.try_record(model, version)
            .await
            .unwrap_or_else(|| panic!("no record for {model}:{version}"))
    }

    /// Runs Reconcile passes until `model:version` reaches `state` (steps are due at once).
    pub async fn reconcile_until(&self, model: &str, version: &str, state: &str) -> Value {
        self.reconcile_until_with(model, version, |r| r["state"] == state)
            .await
    }

    /// Runs Reconcile passes until the record of `model:version` satisfies `done`. A step the
    /// service asks to wait for (`Retry-After: 1`) is due a second later, hence the deadline.
    pub async fn reconcile_until_with(
        &self,
        model: &str,
        version: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let (mut last, mut pass_logs) = (Value::Null, String::new());
        while Instant::now() < deadline {
            let pass = self.post_reconcile().await;
            assert_eq!(pass.status, 200, "{}", pass.raw);
            pass_logs = pass.logs_text();
            last = self.record(model, version).await;
            if done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{model}:{version} never got there: {last:#}\nlast pass: {pass_logs}");
    }
}
