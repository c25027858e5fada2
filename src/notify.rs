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
    let why = record
        .history
        .last()
        .map(|t| t.note.clone())
        .unwrap_or_default();
    let rule = record.rule.as_deref().unwrap_or("-");
    format!(
        "{} {} {outcome} (rule {rule}): {why}",
        record.model, record.version
    )
}

fn payload(format: NotifyFormat, outcome: &str, record: &Record) -> Value {
    let text = summary(outcome, record);
    let fields = json!({
        "model": record.model,
        "version": record.version,
        "workspace": record.workspace,
        "rule": record.rule,
        "outcome": outcome,
        "decision": record.decision(),
        "reasons": record.reasons,
        "gate": record.gate,
    });
    match format {
        NotifyFormat::Raw => {
            let mut body = fields;
            body["text"] = json!(text);
            body
        }
        NotifyFormat::Slack => json!({
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": format!("*Model*\n{}:{}", record.model, record.version)},
                    {"type": "mrkdwn", "text": format!("*Outcome*\n{outcome}")},
                    {"type": "mrkdwn", "text": format!("*Rule*\n{}", record.rule.as_deref().unwrap_or("-"))},
                    {"type": "mrkdwn", "text": format!("*Decision*\n{}", record.decision())}
                ]}
            ],
            "metadata": {"event_type": "aml_autodeploy_outcome", "event_payload": fields},
        }),
        NotifyFormat::Teams => json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": format!("aml-autodeploy: {} {} {outcome}", record.model, record.version)},
                        {"type": "TextBlock", "wrap": true, "text": text},
                        {"type": "FactSet", "facts": [
                            {"title": "Model", "value": format!("{}:{}", record.model, record.version)},
                            {"title": "Outcome", "value": outcome},
                            {"title": "Rule", "value": record.rule.as_deref().unwrap_or("-")},
                            {"title": "Decision", "value": record.decision()},
                            {"title": "Reasons", "value": record.reasons.join("; ")}
                        ]}
                    ],
                    "msteams": {"width": "Full"}
                }
            }]
        }),
    }
}
