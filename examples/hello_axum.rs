//! Baseline for `scripts/bench.sh`: the smallest axum server that speaks the same protocol shape
//! (`GET /` readiness, `POST /ModelRegistered` answered with a fixed host response).
//! Not part of the product.

use axum::Router;
use axum::routing::{get, post};

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let app = Router::new().route("/", get(|| async { "ok" })).route(
        "/ModelRegistered",
        post(|_body: axum::body::Bytes| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                r#"{"Outputs":{},"Logs":["hello"],"ReturnValue":{}}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}
