//! Outcome notifications (`notify:`): one POST per matching outcome and target, in Teams
//! (Adaptive Card for Teams Workflows webhooks), Slack or raw JSON. A failing notification never
//! blocks or repeats a deployment; it is recorded. Webhook URLs are secrets: never logged, and
//! registered with the redactor, through which a refusal's body is described. A redirect is
//! followed only to the same scheme, host and port.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::config::gate::{NotifyFormat, NotifyTarget};
use crate::http::{Http, SendError};
use crate::ledger::record::Notification;
use crate::ledger::{Edit, Ledger, Record};
use crate::logs::InvocationLog;

/// Sends notifications.
pub struct Notifier {
    targets: Vec<NotifyTarget>,
    http: Http,
}

/// How long one notification may take.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

impl Notifier {
    /// A notifier for `targets`, sending through `http`.
    pub fn new(targets: Vec<NotifyTarget>, http: Http) -> Self {
        for url in targets.iter().filter_map(|t| t.url.as_ref()) {
            let url = url.expose_secret();
            http.redactor().add(url);
            // A hook's path (and query) is the secret part; an echo may quote it alone.
            if let Ok(parsed) = url::Url::parse(url) {
                http.redactor().add(&parsed[url::Position::BeforePath..]);
            }
        }
        Self { targets, http }
    }

    /// Announces `outcome` for the record at `key` to every target that wants it and has not been
    /// told yet, then records what happened on the record (best effort).
    pub async fn announce(&self, ledger: &Ledger, key: &str, outcome: &str, log: &InvocationLog) {
        if !self
            .targets
            .iter()
            .any(|t| t.on.iter().any(|o| o == outcome))
        {
            return;
        }
        let Ok(Some((record, _))) = ledger.load(key).await else {
            return;
        };
        let mut sent = Vec::new();
        for target in self
            .targets
            .iter()
            .filter(|t| t.on.iter().any(|o| o == outcome))
        {
            if record
                .notifications
                .iter()
                .any(|n| n.outcome == outcome && n.target == target.label)
            {
                continue;
            }
            let Some(url) = &target.url else {
                continue;
            };
            let body = payload(target.format, outcome, &record);
            let (status, error) = self.post(url.expose_secret(), &body).await;
            match &error {
                None => log.info(format!("notified {} of {outcome}", target.label)),
                Some(e) => log.warn(format!(
                    "notification to {} failed ({e}); the deployment is not affected",
                    target.label
                )),
            }
            sent.push(Notification {
                outcome: outcome.to_string(),
                target: target.label.clone(),
                at: OffsetDateTime::now_utc(),
                status,
                error,
            });
        }
        if sent.is_empty() {
            return;
        }
        // Best effort: the deployment is not affected when the record cannot take the note.
        let _ = ledger
            .update(key, None, |fresh| {
                fresh.notifications.extend(sent.iter().cloned());
                Edit::Save(())
            })
            .await;
    }
}

impl Notifier {
    /// POSTs `body` to `url`: the status, and what went wrong (never the URL; a refusal's body
    /// redacted).
    async fn post(&self, url: &str, body: &Value) -> (Option<u16>, Option<String>) {
        let request = self
            .http
            .client()
            .post(url)
            .timeout(NOTIFY_TIMEOUT)
            .json(body)
            .build();
        let sent = match request {
            Ok(request) => self.http.send_following_redirects(request).await,
            Err(e) => Err(e.into()),
        };
        let redactor = self.http.redactor();
        match sent {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => {
                let status = r.status().as_u16();
                let content_type = r
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = r.bytes().await.unwrap_or_default();
                let said = redactor.excerpt(content_type.as_deref(), &body);
                (Some(status), Some(format!("HTTP {status} with {said}")))
            }
            // `without_url`: the URL is a secret.
            Err(SendError::Transport(e)) => {
                (None, Some(redactor.redact(&e.without_url().to_string())))
            }
            Err(SendError::Redirect(_, why)) => {
                (None, Some(format!("redirect not followed: {why}")))
            }
            Err(e @ SendError::LeavesOrigin { .. }) => {
                (None, Some(redactor.redact(&e.to_string())))
            }
        }
    }
}

/// One line a person reads.
pub fn summary(outcome: &str, record: &Record) -> String {
    let why = match (outcome, record.run.as_deref()) {
        ("run_succeeded" | "run_failed", Some(run)) => format!(
            "GitHub run {}: {}",
            run.url.as_deref().unwrap_or("(no URL)"),
            run.describe()
        ),
        _ => record
            .history
            .last()
            .map(|t| t.note.clone())
            .unwrap_or_default(),
    };
    let rule = record.rule.as_deref().unwrap_or("-");
    format!(
        "{} {} {outcome} (rule {rule}): {why}",
        record.model, record.version
    )
}

/// Log lines a failure notification quotes (the last of each container's).
const NOTIFY_LOG_LINES: usize = 20;
/// Characters of quoted log a notification carries at most (chats cap a message's text).
const NOTIFY_LOG_CHARS: usize = 2500;

/// The failed deployment's last log lines, for the outcomes a failed deployment ends in.
fn log_lines(outcome: &str, record: &Record) -> Option<Vec<String>> {
    if !matches!(outcome, "rolled_back" | "failed") {
        return None;
    }
    let logs = record.rollout.as_ref()?.logs.as_ref()?;
    let mut lines = logs.last_lines(NOTIFY_LOG_LINES);
    // Within the chat's limit: the end is what explains the failure.
    while lines.iter().map(|l| l.chars().count() + 1).sum::<usize>() > NOTIFY_LOG_CHARS
        && lines.len() > 1
    {
        lines.remove(0);
    }
    if let Some(first) = lines.first_mut()
        && first.chars().count() > NOTIFY_LOG_CHARS
    {
        *first = crate::domain::tail::clip(first, NOTIFY_LOG_CHARS);
    }
    Some(lines)
}

/// The run's facts a notification shows: its URL, conclusion and failing step.
fn run_fields(record: &Record) -> Value {
    match record.run.as_deref() {
        None => Value::Null,
        Some(run) => json!({
            "url": run.url,
            "status": run.status,
            "conclusion": run.conclusion,
            "attempt": run.attempt,
            "failingStep": run.failing_step(),
            "reason": run.reason,
        }),
    }
}

fn payload(format: NotifyFormat, outcome: &str, record: &Record) -> Value {
    let text = summary(outcome, record);
    let logs = log_lines(outcome, record);
    // A fenced block: backticks inside the log must not close it.
    let block = logs
        .as_ref()
        .map(|lines| format!("```\n{}\n```", lines.join("\n").replace("```", "'''")));
    let run = run_fields(record);
    let mut fields = json!({
        "model": record.model,
        "version": record.version,
        "workspace": record.workspace,
        "rule": record.rule,
        "outcome": outcome,
        "decision": record.decision(),
        "reasons": record.reasons,
        "gate": record.gate,
    });
    if !run.is_null() {
        fields["run"] = run.clone();
    }
    if let Some(lines) = &logs {
        fields["logs"] = json!(lines);
    }
    let run_url = run["url"].as_str().map(str::to_string);
    let failing_step = run["failingStep"].as_str().map(str::to_string);
    match format {
        NotifyFormat::Raw => {
            let mut body = fields;
            body["text"] = json!(match &block {
                Some(block) => format!("{text}\n{block}"),
                None => text,
            });
            body
        }
        NotifyFormat::Slack => {
            let mut facts = vec![
                json!({"type": "mrkdwn", "text": format!("*Model*\n{}:{}", record.model, record.version)}),
                json!({"type": "mrkdwn", "text": format!("*Outcome*\n{outcome}")}),
                json!({"type": "mrkdwn", "text": format!("*Rule*\n{}", record.rule.as_deref().unwrap_or("-"))}),
                json!({"type": "mrkdwn", "text": format!("*Decision*\n{}", record.decision())}),
            ];
            if let Some(url) = &run_url {
                facts.push(json!({"type": "mrkdwn", "text": format!("*Run*\n{url}")}));
            }
            if let Some(step) = &failing_step {
                facts.push(json!({"type": "mrkdwn", "text": format!("*Failing step*\n{step}")}));
            }
            let mut blocks = vec![
                json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}),
                json!({"type": "section", "fields": facts}),
            ];
            if let Some(block) = &block {
                blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": block}}));
            }
            json!({
                "text": text,
                "blocks": blocks,
                "metadata": {"event_type": "aml_autodeploy_outcome", "event_payload": fields},
            })
        }
        NotifyFormat::Teams => {
            let mut facts = vec![
                json!({"title": "Model", "value": format!("{}:{}", record.model, record.version)}),
                json!({"title": "Outcome", "value": outcome}),
                json!({"title": "Rule", "value": record.rule.as_deref().unwrap_or("-")}),
                json!({"title": "Decision", "value": record.decision()}),
                json!({"title": "Reasons", "value": record.reasons.join("; ")}),
            ];
            if let Some(url) = &run_url {
                facts.push(json!({"title": "Run", "value": url}));
            }
            if let Some(step) = &failing_step {
                facts.push(json!({"title": "Failing step", "value": step}));
            }
            let mut body = vec![
                json!({"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": format!("aml-autodeploy: {} {} {outcome}", record.model, record.version)}),
                json!({"type": "TextBlock", "wrap": true, "text": text}),
                json!({"type": "FactSet", "facts": facts}),
            ];
            if let Some(lines) = &logs {
                body.push(json!({"type": "TextBlock", "wrap": true, "fontType": "Monospace", "text": lines.join("\n")}));
            }
            let mut content = json!({
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "msteams": {"width": "Full"}
            });
            if let Some(url) =
                run_url.filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            {
                content["actions"] =
                    json!([{"type": "Action.OpenUrl", "title": "Open the run", "url": url}]);
            }
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": content
                }]
            })
        }
    }
}
