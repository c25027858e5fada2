//! In-process tests: the router the Functions host talks to, over a pipeline built from settings
//! as `serve` builds it, with an in-memory ledger, GitHub on `wiremock` and the stateful fake ARM.
//! No process, port or storage: the branches of deciding, `Reconcile` and rollouts, in
//! milliseconds. The black-box suite (`tests/api`) keeps the host contract, storage and faults.

mod batch;
mod decisions;
mod deployment_logs;
#[path = "../common/events.rs"]
#[allow(dead_code)] // shared with the black-box suite, which uses all of it
mod events;
#[path = "../common/fake_arm.rs"]
#[allow(dead_code)] // shared with the black-box suite (the fault matrix uses its injections)
mod fake_arm;
#[path = "../common/fake_assets.rs"]
#[allow(dead_code)] // shared with the black-box suite, which uploads through it
mod fake_assets;
#[path = "../common/fake_batch.rs"]
#[allow(dead_code)] // shared with the other suite
mod fake_batch;
#[path = "../common/fake_monitor.rs"]
#[allow(dead_code)] // shared with the black-box suite
mod fake_monitor;
mod follow;
mod harness;
mod instances;
mod progressive;
mod reconcile;
mod rollout;
