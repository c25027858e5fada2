//! Traffic arithmetic and updates: the canary split, the wanted traffic and mirror maps, and
//! the endpoint PUT that applies them (tracked as an ARM operation).
//!
//! Write-ahead: a step that decides a traffic change ([`want`]: canary, linear steps, mirror,
//! promotion after the bake or the approval, restore) only records the new phase and its target
//! split (`pending`) and returns [`Next::Now`]; the deployer saves the record, and the next step
//! sends the PUT ([`RolloutEngine::apply_pending`]). A PUT whose answer or record was lost (a
//! storage outage right after it) is not sent blindly again: an endpoint that already shows the
//! recorded target counts as applied.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::engine::{Next, RolloutEngine};
use super::machine::*;
use crate::azure::arm::{ArmClient, ArmError, Operation};
use crate::domain::azureml::AzureMlPlan;
use crate::domain::rollout::{Phase, RolloutState, TrafficTarget};
use crate::event::WorkspaceId;
use crate::logs::InvocationLog;

impl RolloutEngine {
    pub(super) async fn first_traffic_change(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let empty = state.previous_traffic.values().sum::<u32>() == 0;
        let dep = plan.deployment.clone();
        if (empty || plan.rollout.traffic_steps().is_empty())
            && let Some(approval) = &plan.rollout.approval
        {
            // No steps to take, but a person still approves before it takes all traffic.
            self.ask_approval(plan, approval, state, log);
            return Ok(Next::Now);
        }
        if empty || plan.rollout.traffic_steps().is_empty() {
            state.phase = Phase::Promoting;
            state.next_step = format!("wait for 100% of traffic on {dep}");
            if empty {
                log.info(format!(
                    "endpoint {} serves no traffic: {dep} gets 100% at once",
                    plan.endpoint
                ));
            }
            want(state, BTreeMap::from([(dep, 100)]), BTreeMap::new());
        } else if plan.rollout.mirror_percent > 0 {
            state.phase = Phase::Mirroring;
            state.next_step = format!(
                "mirror {}% of traffic to {dep}, then bake",
                plan.rollout.mirror_percent
            );
            let traffic = state.previous_traffic.clone();
            want(
                state,
                traffic,
                BTreeMap::from([(dep, u32::from(plan.rollout.mirror_percent))]),
            );
        } else {
            enter_step(plan, state, 0);
        }
        // Write-ahead: recorded first, sent by the next step.
        Ok(Next::Now)
    }

    /// Applies the wanted traffic: sends the PUT when none is in flight (again after a transient
    /// failure), polls it, and checks the endpoint really shows the wanted maps. `Ok(Next::Now)`
    /// once applied (or nothing was pending).
    pub(super) async fn apply_pending(
        &self,
        plan: &AzureMlPlan,
        state: &mut RolloutState,
        log: &InvocationLog,
    ) -> Result<Next, StepError> {
        let Some(target) = state.pending.clone() else {
            return Ok(Next::Now);
        };
        if state.operation.is_none() {
            let workspace = ws(&plan.workspace)?;
            let wanted = format!(
                "traffic {}{}",
                show(&target.traffic),
                if target.mirror.is_empty() {
                    String::new()
                } else {
                    format!(", mirror {}", show(&target.mirror))
                }
            );
            match self
                .send_traffic(&workspace, &plan.endpoint, &target)
                .await?
            {
                None => log.info(format!(
                    "endpoint {} already shows {wanted}: applied",
                    plan.endpoint
                )),
                Some(operation) => {
                    log.info(format!("endpoint {}: {wanted}", plan.endpoint));
                    let next = self.track(
                        state,
                        operation,
                        &format!("traffic {}", show(&target.traffic)),
                    );
                    if next != Next::Now {
                        return Ok(next);
                    }
                }
            }
        } else {
            match self
                .poll(state)
                .await
                .map_err(|e| StepError::from_arm_permanent(e, "updating traffic"))?
            {
                Some((Next::After(wait), _)) => return Ok(Next::After(wait)),
                Some((_, Some(endpoint))) => {
                    // The operation said Succeeded: make sure the endpoint shows it.
                    let shown = percent_map(&endpoint["properties"]["traffic"]);
                    let live_target = live(&target.traffic);
                    if endpoint["properties"].get("traffic").is_some() && shown != live_target {
                        return Err(StepError::Fail {
                            why: format!(
                                "updating traffic: the endpoint shows {} instead of {}",
                                show(&shown),
                                show(&live_target)
                            ),
                            configuration: false,
                        });
                    }
                }
                _ => {}
            }
        }
        state.traffic = target.traffic;
        state.mirror = target.mirror;
        state.pending = None;
        Ok(Next::Now)
    }

    /// Sends `target` unless the endpoint already shows it (`Ok(None)`): the PUT of a previous
    /// visit whose record was lost, or an operator's. Waits while the endpoint is being updated
    /// (a lost PUT still in flight) rather than send another over it.
    async fn send_traffic(
        &self,
        workspace: &WorkspaceId,
        endpoint_name: &str,
        target: &TrafficTarget,
    ) -> Result<Option<Operation>, StepError> {
        let failed = |e| StepError::from_arm_permanent(e, "updating traffic");
        let endpoint = self
            .endpoint_resource(workspace, endpoint_name)
            .await
            .map_err(failed)?;
        let properties = &endpoint["properties"];
        if percent_map(&properties["traffic"]) == live(&target.traffic)
            && percent_map(&properties["mirrorTraffic"]) == live(&target.mirror)
        {
            return Ok(None);
        }
        if let Some(busy @ ("Updating" | "Creating")) = properties["provisioningState"].as_str() {
            return Err(StepError::Transient(format!(
                "endpoint {endpoint_name} is {busy}; the traffic update waits for it"
            )));
        }
        let body = endpoint_body(&endpoint, &target.traffic, &target.mirror);
        self.arm
            .begin_put_online_endpoint(workspace, endpoint_name, &body)
            .await
            .map(Some)
            .map_err(failed)
    }

    /// GET the endpoint, set `traffic`/`mirrorTraffic`, PUT it back without read-only fields.
    pub async fn put_traffic(
        &self,
        workspace: &WorkspaceId,
        endpoint_name: &str,
        traffic: &BTreeMap<String, u32>,
        mirror: &BTreeMap<String, u32>,
    ) -> Result<Operation, ArmError> {
        let endpoint = self.endpoint_resource(workspace, endpoint_name).await?;
        let body = endpoint_body(&endpoint, traffic, mirror);
        self.arm
            .begin_put_online_endpoint(workspace, endpoint_name, &body)
            .await
    }

    /// The endpoint resource; a missing one is ARM's 404.
    async fn endpoint_resource(
        &self,
        workspace: &WorkspaceId,
        endpoint_name: &str,
    ) -> Result<Value, ArmError> {
        self.arm
            .online_endpoint(workspace, endpoint_name)
            .await?
            .ok_or_else(|| ArmError::Http {
                method: "GET".into(),
                path: ArmClient::online_endpoint_id(workspace, endpoint_name),
                status: 404,
                code: "NotFound".into(),
                message: format!("online endpoint {endpoint_name} does not exist"),
            })
    }
}

/// The endpoint PUT body: `endpoint` as read with `traffic`/`mirrorTraffic` set, without its
/// read-only fields.
fn endpoint_body(
    endpoint: &Value,
    traffic: &BTreeMap<String, u32>,
    mirror: &BTreeMap<String, u32>,
) -> Value {
    let mut body = json!({});
    for key in ["location", "kind", "tags", "sku"] {
        if let Some(v) = endpoint.get(key).filter(|v| !v.is_null()) {
            body[key] = v.clone();
        }
    }
    // The identity without its read-only parts (principalId, tenantId, the client and
    // principal ids of user-assigned identities), as the SDK sends it.
    if let Some(identity) = endpoint.get("identity").filter(|v| v.is_object()) {
        let mut clean = json!({ "type": identity["type"] });
        if let Some(assigned) = identity["userAssignedIdentities"].as_object() {
            clean["userAssignedIdentities"] =
                Value::Object(assigned.keys().map(|k| (k.clone(), json!({}))).collect());
        }
        body["identity"] = clean;
    }
    let mut properties = endpoint["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for read_only in ["provisioningState", "scoringUri", "swaggerUri"] {
        properties.remove(read_only);
    }
    // Zero entries are dropped, as the SDK does: the service wants the live map only.
    properties.insert("traffic".into(), json!(live(traffic)));
    properties.insert("mirrorTraffic".into(), json!(live(mirror)));
    body["properties"] = Value::Object(properties);
    body
}

/// The live entries of a traffic or mirror map (ARM drops zeroes).
fn live(map: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
    map.iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Sets the traffic this phase wants; [`RolloutEngine::apply_pending`] sends it.
pub(super) fn want(
    state: &mut RolloutState,
    traffic: BTreeMap<String, u32>,
    mirror: BTreeMap<String, u32>,
) {
    state.pending = Some(TrafficTarget { traffic, mirror });
    state.hold_until = None;
}

pub(super) fn percent_map(value: &Value) -> BTreeMap<String, u32> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n as u32)))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .unwrap_or_default()
}

/// Moves to traffic step `index` (the canary phase): the step's share for the new deployment,
/// taken from the live ones in proportion (leaving a mirror zeroes it in the same PUT).
pub(super) fn enter_step(plan: &AzureMlPlan, state: &mut RolloutState, index: usize) {
    let dep = plan.deployment.clone();
    let steps = plan.rollout.traffic_steps();
    let share = steps.get(index).copied().unwrap_or(100);
    state.phase = Phase::Canary;
    state.step = index;
    state.step_started = None;
    state.next_step = if steps.len() > 1 {
        format!(
            "step {} of {}: {share}% on {dep}, then bake",
            index + 1,
            steps.len()
        )
    } else {
        format!("{share}% canary on {dep}, then bake")
    };
    let traffic = canary_split(&state.previous_traffic, &dep, share);
    want(state, traffic, BTreeMap::new());
}

/// Takes `canary` percent for `new` from the live deployments in proportion to their shares; the
/// result sums to 100.
pub fn canary_split(
    previous: &BTreeMap<String, u32>,
    new: &str,
    canary: u32,
) -> BTreeMap<String, u32> {
    let total: u32 = previous.values().sum();
    if total == 0 {
        return BTreeMap::from([(new.to_string(), 100)]);
    }
    let remaining = 100 - canary.min(100);
    let mut out: BTreeMap<String, u32> = previous
        .iter()
        .map(|(k, v)| (k.clone(), v * remaining / total))
        .collect();
    // Hand the rounding remainder to the largest shares first.
    let mut given: u32 = out.values().sum();
    let mut order: Vec<(String, u32)> = previous.iter().map(|(k, v)| (k.clone(), *v)).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut i = 0;
    while given < remaining && !order.is_empty() {
        *out.entry(order[i % order.len()].0.clone()).or_default() += 1;
        given += 1;
        i += 1;
    }
    out.insert(new.to_string(), canary.min(100));
    out.retain(|_, v| *v > 0);
    out
}

pub(super) fn show(map: &BTreeMap<String, u32>) -> String {
    if map.is_empty() {
        return "{}".into();
    }
    let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k}: {v}%")).collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn the_canary_share_is_taken_in_proportion() {
        assert_eq!(
            canary_split(&map(&[("blue", 100)]), "green", 10),
            map(&[("blue", 90), ("green", 10)])
        );
        assert_eq!(
            canary_split(&map(&[("blue", 70), ("red", 30)]), "green", 10),
            map(&[("blue", 63), ("red", 27), ("green", 10)])
        );
        let odd = canary_split(&map(&[("a", 33), ("b", 33), ("c", 34)]), "n", 25);
        assert_eq!(odd.values().sum::<u32>(), 100, "{odd:?}");
        assert_eq!(odd["n"], 25);
        assert_eq!(canary_split(&BTreeMap::new(), "n", 10), map(&[("n", 100)]));
    }
}
