//! Direct deployment to Azure ML **batch endpoints**: the ARM bodies a batch rollout sends
//! ([`wire`]: the default switch's endpoint PUT, the smoke job's invoke). The YAML translation is
//! [`crate::deployment::batch`], the plan [`crate::domain::batch::BatchPlan`]; the rollout itself
//! (create, smoke job, approval, the default switch, retention) is in `rollout/batch/`, on the same
//! engine, lock, ledger record and `preparing_assets` phase as online rollouts.

pub mod wire;

#[cfg(test)]
mod goldens;
