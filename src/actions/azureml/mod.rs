//! Direct deployment to Azure ML managed online endpoints: the rollout state machine
//! ([`rollout`]) that the event handler starts and `Reconcile` advances, run from the ledger by
//! [`deploy`]; the code upload ([`upload`]). The plan a rule renders is
//! [`crate::domain::azureml`]; the YAML translation is [`crate::deployment`].

pub mod batch;
pub mod deploy;
pub mod rollout;
pub mod stream;
pub mod upload;

pub use crate::domain::azureml::{AzureMlPlan, SmokeTestPlan, deployment_name, plan};
