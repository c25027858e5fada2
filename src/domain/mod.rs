//! The domain a version's record holds, below the ledger that stores it: what a rule decided to do
//! ([`action`], [`azureml`]) and how far a direct deployment's rollout got ([`rollout`]). Plain
//! data with the pure functions that make it; the engines that act on it live in `actions`.

pub mod action;
pub mod azureml;
pub mod batch;
pub mod rollout;
pub mod tail;
