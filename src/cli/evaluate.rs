//! `evaluate`: reads model versions from Azure ML and runs them through the pipeline as if just
//! registered; a dry run unless `--execute` (then recorded as manually triggered).

use std::io::Write;

use crate::azure::arm::ArmClient;
use crate::config::Config;
use crate::event::WorkspaceId;
use crate::http::Http;
use crate::ledger::Ledger;
use crate::ledger::record::rfc3339;
use crate::logs::InvocationLog;
use crate::pipeline::{Execution, Invocation, Pipeline};
use crate::startup::Settings;
use crate::startup::{build_pipeline, open_ledger};

use super::config_arg::ConfigArg;
use super::errors::CliError;
use super::replay::{execution, ledger_for, print_outcome};

/// `evaluate MODEL:VERSION... [--execute] [--force] [--config F] [--workspace ID]`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateArgs {
    /// One or more MODEL:VERSION.
    #[arg(required = true)]
    targets: Vec<String>,
    /// Act and record, instead of only showing the decision.
    #[arg(long)]
    execute: bool,
    /// Ship despite the quality gate and the stale check (recorded as forced); also re-runs a
    /// rejected, stale or failed version.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    config: ConfigArg,
    /// Workspace ARM id (default: the config's `workspace`).
    #[arg(long)]
    workspace: Option<String>,
}

/// Evaluates the versions `args` name, on stdout.
pub async fn run(args: EvaluateArgs, settings: Settings, http: &Http) -> Result<bool, CliError> {
    let config_path = args.config.resolve(&settings);
    let workspace = match args.workspace {
        Some(ws) => ws,
        None => Config::load(&config_path)
            .ok()
            .and_then(|c| c.workspace.map(|w| w.to_string()))
            .ok_or_else(|| {
                CliError::Setup(format!(
                    "evaluate needs the workspace: pass --workspace /subscriptions/…/workspaces/NAME or set `workspace:` in {}",
                    config_path.display()
                ))
            })?,
    };
    let workspace =
        WorkspaceId::parse(&workspace).map_err(|e| CliError::Setup(format!("--workspace {e}")))?;
    let credential = settings.credential.clone().map_err(CliError::Setup)?;
    let mut out = super::terminal::Visible::new(std::io::stdout());
    writeln!(
        out,
        "Azure credential: {} · ARM: {} (api-version {})",
        credential.kind().as_str(),
        settings.arm.endpoint,
        settings.arm.api_version
    )?;
    let arm = ArmClient::new(&settings.arm, credential, http.clone()).map_err(CliError::Setup)?;
    let pipeline = build_pipeline(&settings, &config_path, ledger_for(args.execute), http);
    // A dry run reads (never writes) the app's ledger to say what --execute would find.
    let ledger = if args.execute {
        None
    } else {
        open_ledger(&settings, http).ok()
    };
    let ok = evaluate(
        &pipeline,
        &arm,
        &workspace,
        &args.targets,
        EvaluateMode {
            execution: execution(args.execute),
            force: args.force,
        },
        ledger.as_ref(),
        &mut out,
    )
    .await?;
    Ok(ok)
}

/// How `evaluate` runs.
#[derive(Debug, Clone, Copy)]
pub struct EvaluateMode {
    /// Send (`--execute`) or dry run.
    pub execution: Execution,
    /// `--force`.
    pub force: bool,
}

/// `evaluate`: reads each model version from ARM (tags, properties, registration time), builds
/// the event Azure ML would have sent, and runs it through the pipeline, recorded as manually
/// triggered. Returns whether every version was handled.
pub async fn evaluate(
    pipeline: &Pipeline,
    arm: &ArmClient,
    workspace: &WorkspaceId,
    targets: &[String],
    mode: EvaluateMode,
    ledger_for_dry_run: Option<&Ledger>,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let EvaluateMode { execution, force } = mode;
    let mut all_ok = true;
    for target in targets {
        writeln!(out, "── {target} ──")?;
        let Some((name, version)) = target.rsplit_once(':') else {
            writeln!(out, "FAILED: {target:?} is not MODEL:VERSION")?;
            all_ok = false;
            continue;
        };
        let model = match arm.model_version(workspace, name, version).await {
            Ok(model) => model,
            Err(e) => {
                writeln!(
                    out,
                    "FAILED: cannot read model {name} version {version} from {workspace}: {e}"
                )?;
                all_ok = false;
                continue;
            }
        };
        if let Some(ledger) = ledger_for_dry_run {
            let key = crate::ledger::record_key(workspace.as_ref(), name, version);
            match ledger.load(&key).await {
                Ok(Some((record, _))) => writeln!(
                    out,
                    "  the ledger has this version as {} ({}); --execute would {}",
                    record.state,
                    record.last_outcome(),
                    if record.state.open_to_action() {
                        "act on it"
                    } else {
                        "report it as already handled"
                    }
                )?,
                Ok(None) => writeln!(out, "  the ledger has no record of this version yet")?,
                Err(e) => writeln!(out, "  (the ledger could not be read: {e})")?,
            }
        }
        let event_time = model
            .created_at
            .clone()
            .unwrap_or_else(|| rfc3339(time::OffsetDateTime::now_utc()));
        let event = serde_json::json!({
            "id": format!("evaluate-{}", uuid::Uuid::new_v4()),
            "topic": workspace.as_ref(),
            "subject": format!("models/{name}:{version}"),
            "eventType": crate::event::MODEL_REGISTERED,
            "eventTime": event_time,
            "data": {
                "modelName": name,
                "modelVersion": version,
                "modelTags": model.tags,
                "modelProperties": model.properties,
            },
            "dataVersion": "2",
            "metadataVersion": "1",
        });
        let log = InvocationLog::new();
        log.info(format!(
            "manually triggered: model {name} version {version} read from {}",
            model.id
        ));
        let invocation = Invocation {
            id: "evaluate".into(),
            execution,
            trigger: "manual",
            force,
        };
        let result = pipeline.handle(&event, &invocation, &log).await;
        all_ok &= print_outcome(&log, result, execution, out)?;
    }
    Ok(all_ok)
}
