//! Canary analysis in the rollout: each traffic step is judged on the endpoint's real traffic
//! (Azure Monitor, through [`crate::azure::monitor`]) against the live deployments over the same
//! window ([`crate::canary::judge`], pure). A step moves on only with a
//! passing judgement made once its bake is over (or `on_insufficient_data: promote`); a failing
//! one rolls back; a metrics read that fails is no judgement at all: the step waits and asks again.

use std::time::Duration;

use time::OffsetDateTime;

use super::engine::RolloutEngine;
use super::machine::*;
use crate::azure::monitor::MonitorError;
use crate::canary::{self, AnalysisSpec, OnInsufficientData, Verdict};
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::{MAX_JUDGEMENTS, RolloutState, StepJudgement};
use crate::ledger::record::rfc3339;
use crate::logs::InvocationLog;

/// What a judged step does next.
pub(super) enum StepCall {
    /// The step passed (or may go on): the next step, the approval, or 100%.
    Advance,
    /// Not yet: look again after this long (at least `AUTODEPLOY_MIN_STEP_SECS`).
    Wait(Duration),
}

/// Between two looks at the metrics: the next visit, no sooner than `AUTODEPLOY_MIN_STEP_SECS`
/// (which the deployer applies); never zero, which would look again within the same visit.
const LOOK_AGAIN: Duration = Duration::from_millis(1);

impl RolloutEngine {
    /// Judges the current step (see the module docs). `started`: when its traffic took effect;
    /// `bake_over`: its bake has ended.
    pub(super) async fn judge_step(
        &self,
        plan: &AzureMlPlan,
        spec: &AnalysisSpec,
        state: &mut RolloutState,
        started: OffsetDateTime,
        bake_over: bool,
        log: &InvocationLog,
    ) -> Result<StepCall, StepError> {
        let now = OffsetDateTime::now_utc();
        let step = state.step + 1;
        let max_until = started + time::Duration::minutes(i64::from(spec.max_bake_minutes));
        let out_of_time = now >= max_until;
        let Some(window) = canary::window(now, started, spec.window_minutes) else {
            // No complete minute since the step began: nothing to judge yet (not "too few
            // requests"); the policy decides only once max_bake_minutes has passed.
            state.next_step = format!(
                "wait for complete minutes of metrics for step {step} (Azure Monitor lags about {} minutes)",
                canary::INGESTION_LAG_MINUTES
            );
            if !out_of_time {
                return Ok(StepCall::Wait(LOOK_AGAIN));
            }
            return self.insufficient(spec, state, bake_over, out_of_time, log);
        };
        let workspace = ws(&plan.workspace)?;
        let endpoint_id =
            crate::azure::arm::ArmClient::online_endpoint_id(&workspace, &plan.endpoint);
        let figures = match self
            .arm
            .endpoint_figures(&endpoint_id, &window, spec.latency)
            .await
        {
            Ok(figures) => figures,
            Err(e @ MonitorError::Invalid(_)) => {
                return Err(StepError::Fail {
                    why: format!("canary analysis: {e}"),
                    configuration: true,
                });
            }
            Err(MonitorError::NotJudged(why)) => {
                log.warn(format!(
                    "step {step} not judged: the metrics could not be read ({why}); asking again"
                ));
                state.metrics_problem = Some(why.clone());
                if out_of_time {
                    return Err(StepError::Fail {
                        why: format!(
                            "canary analysis: metrics unavailable until max_bake_minutes ({}) passed: {why}",
                            spec.max_bake_minutes
                        ),
                        configuration: false,
                    });
                }
                state.next_step = format!("step {step}: metrics not judged ({why}); ask again");
                return Ok(StepCall::Wait(LOOK_AGAIN));
            }
            Err(e @ MonitorError::Forbidden(_)) => {
                let why = e.to_string();
                // A configuration problem (the Monitoring Reader role), and no data: never a
                // blind promotion; the insufficient-data policy decides once the bake is out.
                log.error(format!(
                    "step {step}: configuration problem: the metrics cannot be read: {why}"
                ));
                state.metrics_problem = Some(format!("configuration problem: {why}"));
                state.next_step = format!(
                    "step {step}: the metrics cannot be read (Monitoring Reader missing); holding until max_bake_minutes"
                );
                // Held to max_bake_minutes whatever the policy: a missing role is no reason to
                // promote (or roll back) sooner.
                if !out_of_time {
                    return Ok(StepCall::Wait(LOOK_AGAIN));
                }
                return self
                    .insufficient(spec, state, bake_over, out_of_time, log)
                    .map_err(|e| match e {
                        StepError::Fail { why, .. } => StepError::Fail {
                            why: format!(
                                "{why}; the metrics could not be read: give the identity the Monitoring Reader role on the endpoint or its workspace"
                            ),
                            configuration: true,
                        },
                        other => other,
                    });
            }
        };
        state.metrics_problem = None;
        let baseline: Vec<String> = state
            .previous_traffic
            .keys()
            .filter(|d| **d != plan.deployment)
            .cloned()
            .collect();
        let judgement = canary::judge(spec, &plan.deployment, &baseline, &figures, &window);
        let verdict = judgement.verdict;
        let summary = judgement.summary();
        state.judgements.push(StepJudgement {
            step,
            at: now,
            judgement,
        });
        if state.judgements.len() > MAX_JUDGEMENTS {
            let extra = state.judgements.len() - MAX_JUDGEMENTS;
            state.judgements.drain(..extra);
        }
        log.info(format!("step {step} of {}: {summary}", plan.deployment));
        match verdict {
            Verdict::Fail => Err(StepError::Fail {
                why: format!("canary analysis failed at step {step}: {summary}"),
                configuration: false,
            }),
            Verdict::Pass if bake_over => Ok(StepCall::Advance),
            Verdict::Pass => {
                state.next_step = format!(
                    "bake step {step} until {}; last judgement: pass",
                    state.hold_until.map(rfc3339).unwrap_or_default()
                );
                Ok(StepCall::Wait(LOOK_AGAIN))
            }
            Verdict::Inconclusive => {
                state.next_step =
                    format!("step {step}: not enough traffic to judge yet; look again");
                self.insufficient(spec, state, bake_over, out_of_time, log)
            }
        }
    }

    /// No judgement possible (too few requests, no complete minute, no permission).
    fn insufficient(
        &self,
        spec: &AnalysisSpec,
        state: &mut RolloutState,
        bake_over: bool,
        out_of_time: bool,
        log: &InvocationLog,
    ) -> Result<StepCall, StepError> {
        if !bake_over {
            return Ok(StepCall::Wait(LOOK_AGAIN));
        }
        let step = state.step + 1;
        match spec.on_insufficient_data {
            OnInsufficientData::Wait if !out_of_time => Ok(StepCall::Wait(LOOK_AGAIN)),
            OnInsufficientData::Wait => Err(StepError::Fail {
                why: format!(
                    "canary analysis: step {step} could not be judged within max_bake_minutes ({}); not promoted blind",
                    spec.max_bake_minutes
                ),
                configuration: false,
            }),
            OnInsufficientData::Promote => {
                log.warn(format!(
                    "step {step} could not be judged; moving on as on_insufficient_data: promote says"
                ));
                Ok(StepCall::Advance)
            }
            OnInsufficientData::Rollback => Err(StepError::Fail {
                why: format!(
                    "canary analysis: step {step} could not be judged (on_insufficient_data: rollback)"
                ),
                configuration: false,
            }),
        }
    }
}
