//! Text from upstreams and records reaches the terminal with its control characters made
//! visible: a scoring container's error body cannot set the window title, clear the screen or
//! paint a fake green "promoted" through `status` or `status --watch`.

use crate::azureml::{Direct, FAST, cli, credit};

#[tokio::test(flavor = "multi_thread")]
async fn status_and_watch_show_an_upstreams_escape_sequences_as_text() {
    let t = Direct::new().await;
    t.arm.add_endpoint("credit-ep", &[("blue", "1", 100)]);
    let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[32mpromoted\u{9b}0m\r";
    t.arm.with(|s| {
        s.scoring_status.insert("credit-risk-51".into(), 500);
        s.scoring_body
            .insert("credit-risk-51".into(), hostile.to_string());
    });
    let app = t.spawn(&t.config("credit-ep", FAST)).await;
    app.post_event(&credit("51")).await;
    let record = t.reconcile_until(&app, "51", "rolled_back").await;
    // The record keeps what the service said (JSON-escaped there).
    assert!(record.to_string().contains("pwned"), "{record:#}");
    for args in [
        &["status"][..],
        &["status", "credit-risk"][..],
        &["status", "credit-risk:51"][..],
        &["status", "credit-risk:51", "--watch", "--interval", "1"][..],
    ] {
        let (_, out, err) = cli(&t, args);
        for text in [&out, &err] {
            assert!(
                !text
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t'),
                "{args:?} printed a control character: {text:?}"
            );
        }
        assert!(out.contains("pwned") || args.len() <= 2, "{args:?}: {out}");
    }
    let (_, out, _) = cli(
        &t,
        &["status", "credit-risk:51", "--watch", "--interval", "1"],
    );
    assert!(out.contains("\\u{1b}]0;pwned"), "made visible: {out}");
}
