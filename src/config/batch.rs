//! The batch endpoint parts of an `azureml:` rule: `batch_endpoint` (in place of `endpoint`),
//! `smoke_job`, and which `rollout` keys a batch rollout takes (it has no traffic to shape: only
//! `approval` before the default switch, and `retain_previous_minutes` for the previous default).

use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};

use super::problems::{Walker, join, present};

/// What makes an `azureml:` rule a batch rule.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchTarget {
    /// `smoke_job:`: a job the new deployment runs before it becomes the default.
    pub smoke_job: Option<SmokeJob>,
}

/// `smoke_job:`: a batch job that invokes the new deployment itself (not the default) and must
/// complete within `timeout_minutes` before the deployment becomes the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmokeJob {
    /// A data asset (`azureml:NAME:VERSION`), a datastore path (`azureml://datastores/…`) or a
    /// URL (`https://…`).
    pub input: String,
    /// `uri_folder` or `uri_file`; unset: the data asset's own type, else `uri_folder` (as
    /// `az ml batch-endpoint invoke --input` without `--input-type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_type: Option<String>,
    /// The job must complete within this long after it is submitted.
    pub timeout_minutes: u32,
}

/// The default bound of a smoke job.
pub const DEFAULT_SMOKE_JOB_MINUTES: u32 = 60;

/// `rollout:` keys a batch rule takes; the others shape traffic, which a batch endpoint has not.
pub(super) const BATCH_ROLLOUT_KEYS: &[&str] = &["approval", "retain_previous_minutes"];

impl SmokeJob {
    /// Whether the input names a registered data asset (`azureml:NAME:VERSION`).
    pub fn data_asset(&self) -> Option<(&str, &str)> {
        let rest = self.input.strip_prefix("azureml:")?;
        if rest.starts_with("//") || rest.starts_with('/') {
            return None;
        }
        rest.split_once(':')
    }
}

/// Checks a smoke job's input: what az ml's invoke accepts, except local paths (nothing is
/// uploaded at rollout time) and labels (a smoke job runs on a fixed input).
pub fn check_input(input: &str) -> Result<(), String> {
    let input = input.trim();
    if let Some(rest) = input.strip_prefix("azureml:")
        && !rest.starts_with('/')
    {
        return match rest.split_once(':') {
            Some((name, version))
                if !name.is_empty()
                    && !version.is_empty()
                    && !name.contains(['/', '@'])
                    && !version.contains([':', '/']) =>
            {
                Ok(())
            }
            _ => Err(format!(
                "{input:?}: a data asset is azureml:NAME:VERSION (labels such as @latest are not resolved)"
            )),
        };
    }
    let remote = ["azureml://", "https://", "http://", "wasbs://", "abfss://"]
        .iter()
        .any(|p| input.starts_with(p));
    if remote
        || input.starts_with("azureml:/subscriptions/")
        || input.starts_with("/subscriptions/")
    {
        return Ok(());
    }
    Err(format!(
        "{input:?} looks like a local path: a smoke job's input must already be in Azure (azureml:NAME:VERSION, azureml://datastores/NAME/paths/…, or an https URL); nothing is uploaded at rollout time"
    ))
}

impl Walker<'_> {
    /// `smoke_job:`.
    pub(super) fn smoke_job(&mut self, value: &Value, location: &str) -> Option<SmokeJob> {
        let map = self.mapping(value, location)?;
        self.check_keys(map, &["input", "input_type", "timeout_minutes"], location);
        let input = self.parsed(map, "input", location, true, |raw| {
            check_input(raw).map(|_| raw.trim().to_string())
        });
        let input_type = match present(map, "input_type") {
            None => Some(None),
            Some(Value::String(t)) if t == "uri_folder" || t == "uri_file" => Some(Some(t.clone())),
            Some(_) => {
                self.problem(
                    &join(location, "input_type"),
                    "must be uri_folder or uri_file",
                );
                None
            }
        };
        let timeout_minutes = match present(map, "timeout_minutes") {
            None => Some(DEFAULT_SMOKE_JOB_MINUTES),
            Some(v) => match v.as_u64() {
                Some(n @ 1..=10_080) => Some(n as u32),
                _ => {
                    self.problem(
                        &join(location, "timeout_minutes"),
                        "must be a whole number of minutes from 1 to 10080 (a week)",
                    );
                    None
                }
            },
        };
        Some(SmokeJob {
            input: input?,
            input_type: input_type?,
            timeout_minutes: timeout_minutes?,
        })
    }

    /// Keys of an `azureml:` block that belong to the other kind of endpoint, and `rollout` keys
    /// a batch rollout has no use for.
    pub(super) fn endpoint_kind_keys(&mut self, map: &Mapping, batch: bool, location: &str) {
        let wrong: &[(&str, &str)] = if batch {
            &[(
                "smoke_test",
                "scores an online endpoint; a batch endpoint's new deployment is checked with `smoke_job` (a batch job)",
            )]
        } else {
            &[(
                "smoke_job",
                "runs a batch job on a batch endpoint (`batch_endpoint`); an online endpoint's new deployment is checked with `smoke_test`",
            )]
        };
        for (key, why) in wrong {
            if present(map, key).is_some() {
                self.problem(&join(location, key), *why);
            }
        }
        if batch && let Some(Value::Mapping(rollout)) = present(map, "rollout") {
            let rollout_location = join(location, "rollout");
            for key in rollout.keys().filter_map(Value::as_str) {
                if !BATCH_ROLLOUT_KEYS.contains(&key) {
                    self.problem(
                        &join(&rollout_location, key),
                        format!(
                            "not for batch endpoints: a batch endpoint has no traffic to shift, its new deployment becomes the default at once (allowed: {})",
                            BATCH_ROLLOUT_KEYS.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_job_inputs_are_remote() {
        for ok in [
            "azureml:heart-unlabeled:3",
            "azureml://datastores/workspaceblobstore/paths/heart/",
            "https://example.blob.core.windows.net/data/x.csv",
            "azureml:/subscriptions/s/resourceGroups/r/providers/Microsoft.MachineLearningServices/workspaces/w/data/d/versions/1",
        ] {
            assert!(check_input(ok).is_ok(), "{ok}");
        }
        for bad in [
            "./data",
            "data/x.csv",
            "azureml:heart@latest",
            "azureml:heart",
        ] {
            assert!(check_input(bad).is_err(), "{bad}");
        }
        let job = SmokeJob {
            input: "azureml:heart:3".into(),
            input_type: None,
            timeout_minutes: 5,
        };
        assert_eq!(job.data_asset(), Some(("heart", "3")));
    }
}
