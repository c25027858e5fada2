//! Black-box tests: the real binary, driven through the Functions host contract, with `wiremock`
//! standing in for GitHub.

mod approvals;
mod assets;
mod azure;
mod azureml;
mod batch;
mod cli;
#[path = "../common/events.rs"]
mod events;
#[path = "../common/fake_arm.rs"]
#[allow(dead_code)] // shared with the in-process suite, which uses parts this one does not
mod fake_arm;
#[path = "../common/fake_assets.rs"]
#[allow(dead_code)] // shared with the in-process suite
mod fake_assets;
#[path = "../common/fake_batch.rs"]
#[allow(dead_code)] // shared with the other suite
mod fake_batch;
#[path = "../common/fake_monitor.rs"]
#[allow(dead_code)] // shared with the in-process suite
mod fake_monitor;
mod faults;
mod gate;
mod github;
mod helpers;
mod host_contract;
mod instances;
mod ledger;
mod logging;
mod monitor;
mod package;
mod secrets;
mod stories;
mod terminal;
mod uploads;
mod webhook;
