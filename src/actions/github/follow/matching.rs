//! Recognising the run a dispatch started when GitHub gave no run id: by the event id its
//! `run-name` carries (pure).

use serde_json::Value;

use crate::actions::{GithubPlan, GithubRequest};

/// The event ids a run of this dispatch shows in its `run-name`: for `repository_dispatch`,
/// `client_payload.eventId` and the version's event ids; for `workflow_dispatch`, the inputs that
/// carry one of them. `Err` when the run cannot be recognised at all.
pub fn carried_event_ids(plan: &GithubPlan, event_ids: &[String]) -> Result<Vec<String>, String> {
    let ids: Vec<String> = match &plan.request {
        GithubRequest::RepositoryDispatch { client_payload, .. } => client_payload["eventId"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .chain(event_ids.iter().cloned())
            .collect(),
        GithubRequest::WorkflowDispatch { inputs, .. } => event_ids
            .iter()
            .filter(|id| inputs.values().any(|v| v.as_str() == Some(id.as_str())))
            .cloned()
            .collect(),
    };
    let mut unique: Vec<String> = Vec::new();
    for id in ids.into_iter().filter(|id| id.len() >= 4) {
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    let ids = unique;
    if ids.is_empty() {
        return Err(
            "the run cannot be recognised: GitHub sent no run details and the rule's inputs do not \
             pass {eventId} (pass it as an input and show it in the workflow's run-name)"
                .to_string(),
        );
    }
    Ok(ids)
}

/// The newest run in a list (`workflow_runs`) whose `display_title` or `name` carries one of `ids`
/// as a whole word (`evt-7` is not found in `evt-70`).
pub fn matching_run<'a>(list: &'a Value, ids: &[String]) -> Option<&'a Value> {
    list["workflow_runs"]
        .as_array()?
        .iter()
        .filter(|run| run["id"].as_u64().is_some())
        .find(|run| {
            ["display_title", "name"].iter().any(|key| {
                let title = run[*key].as_str().unwrap_or_default();
                ids.iter().any(|id| carries(title, id))
            })
        })
}

fn carries(title: &str, id: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_');
    title.match_indices(id).any(|(at, _)| {
        !word(title[..at].chars().next_back()) && !word(title[at + id.len()..].chars().next())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(request: GithubRequest) -> GithubPlan {
        GithubPlan {
            repository: crate::config::RepoSlug::parse("o/r").unwrap(),
            request,
            follow: crate::actions::FollowPlan::default(),
        }
    }

    #[test]
    fn runs_are_matched_on_the_whole_event_id_newest_first() {
        let list = json!({"workflow_runs": [
            {"id": 3, "display_title": "Deploy m:70 (event evt-m-70)"},
            {"id": 2, "display_title": "Deploy m:7 (event evt-m-7)"},
            {"id": 1, "name": "deploy evt-m-7", "display_title": "older duplicate"},
            {"display_title": "no id: evt-m-7"}
        ]});
        let ids = vec!["evt-m-7".to_string()];
        assert_eq!(matching_run(&list, &ids).unwrap()["id"], 2);
        assert!(matching_run(&list, &["evt-m".to_string()]).is_none());
        assert!(matching_run(&json!({"message": "x"}), &ids).is_none());
        assert!(carries("(evt-1)", "evt-1") && carries("evt-1", "evt-1"));
        assert!(!carries("evt-10", "evt-1") && !carries("xevt-1", "evt-1"));
    }

    #[test]
    fn which_ids_a_run_can_carry() {
        let events = vec!["evt-9".to_string()];
        let dispatch = plan(GithubRequest::RepositoryDispatch {
            event_type: "deploy".into(),
            client_payload: json!({"eventId": "evt-1"}),
        });
        assert_eq!(
            carried_event_ids(&dispatch, &events).unwrap(),
            ["evt-1", "evt-9"]
        );
        let inputs = |v: &str| {
            plan(GithubRequest::WorkflowDispatch {
                workflow: "d.yml".into(),
                git_ref: "main".into(),
                inputs: json!({"model": "m", "event_id": v})
                    .as_object()
                    .unwrap()
                    .clone(),
            })
        };
        assert_eq!(
            carried_event_ids(&inputs("evt-9"), &events).unwrap(),
            ["evt-9"]
        );
        let not_carried = carried_event_ids(&inputs("manual"), &events).unwrap_err();
        assert!(not_carried.contains("{eventId}"), "{not_carried}");
    }
}
