//! Second reference point for `scripts/bench.sh` (not part of the product): an axum server that
//! parses the host envelope and answers with a host response of about the size ours has (two log
//! lines, a `ReturnValue` built from the event), and does nothing else: no rules, no decision
//! record, no log output. It shows how much of the gap to the bare server any handler that reads
//! the event and explains itself pays on this machine.

use axum::Router;
use axum::routing::{get, post};
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let app = Router::new().route("/", get(|| async { "ok" })).route(
        "/ModelRegistered",
        post(|body: axum::body::Bytes| async move {
            let envelope: Value = serde_json::from_slice(&body).unwrap_or_default();
            let event = &envelope["Data"]["eventGridEvent"];
            let (name, version) = (
                event["data"]["modelName"].as_str().unwrap_or_default(),
                event["data"]["modelVersion"].as_str().unwrap_or_default(),
            );
            let reason = format!("skipped: no rule matched {name}:{version} (reference server)");
            let response = json!({
                "Outputs": {},
                "Logs": [
                    format!("event {} (EventGrid schema): model {name} version {version} registered in {}",
                        event["id"].as_str().unwrap_or_default(), event["topic"].as_str().unwrap_or_default()),
                    reason,
                ],
                "ReturnValue": {
                    "decision": "skipped", "reason": reason, "eventId": event["id"],
                    "eventType": event["eventType"], "workspace": event["topic"],
                    "model": name, "version": version,
                },
            });
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&response).unwrap_or_default(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}
