//! Code uploads that cannot leak, bloat or stall: files that resolve outside the config folder are
//! refused (listed nowhere, uploaded nowhere), large files go in blocks, an interrupted upload
//! resumes in the same pending upload without sending again what is there, content changed after
//! the event is refused, and a pass stops sending at its deadline.

use std::time::{Duration, Instant};

use aml_autodeploy::actions::azureml::stream::{self, Outgoing};
use aml_autodeploy::actions::azureml::upload::SasContainer;
use aml_autodeploy::deployment::assets::code::UploadChain;
use serde_json::json;

use crate::assets::{seed, with_uploads};
use crate::events::model_event;
use crate::fake_assets::{Azurite, UploadProxy, container_for};
use crate::helpers::*;

/// A 9 MiB file (three 4 MiB blocks, the last short) of pseudo-random bytes (xorshift).
fn big_file() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..9 * 1024 * 1024 + 123)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[cfg(unix)]
#[test]
fn check_config_refuses_a_code_file_that_points_outside_the_config_folder() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("config");
    std::fs::create_dir_all(config.join("aml/src")).unwrap();
    std::fs::write(root.path().join("secrets.env"), "GITHUB_TOKEN=ghp_leak\n").unwrap();
    std::fs::write(
        config.join("aml/src/score.py"),
        "def run(x):\n    return x\n",
    )
    .unwrap();
    std::fs::write(
        config.join("aml/deployment.yml"),
        "name: blue\nendpoint_name: fraud-ep\nmodel: azureml:m:1\ncode_configuration:\n  code: ./src\n  scoring_script: score.py\nenvironment: azureml:AzureML-sklearn-1.0@latest\ninstance_type: Standard_DS3_v2\ninstance_count: 1\n",
    )
    .unwrap();
    std::fs::write(
        config.join("autodeploy.yml"),
        "rules:\n  - name: direct\n    models: [m]\n    azureml:\n      endpoint: fraud-ep\n      deployment: aml/deployment.yml\n",
    )
    .unwrap();
    // Inside: fine, and the hash is reported although loading only lists the folder.
    let (code, out, err) = run_cli(&config, &["check-config"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("code folder ./src: 1 file(s), sha256 "),
        "{out}"
    );

    for (link, target) in [
        ("environ", std::path::PathBuf::from("/proc/self/environ")),
        ("up.env", root.path().join("secrets.env")),
    ] {
        let path = config.join("aml/src").join(link);
        std::os::unix::fs::symlink(&target, &path).unwrap();
        for args in [&["check-config"][..], &["check-config", "--list-files"][..]] {
            let (code, out, err) = run_cli(&config, args, &[]);
            assert_ne!(code, 0, "{args:?} accepted {link}: {out}{err}");
            let text = format!("{out}{err}");
            assert!(text.contains(link), "names the file: {text}");
            assert!(text.contains("outside the config file's folder"), "{text}");
            assert!(!text.contains("ghp_leak"), "{text}");
            assert!(
                !out.lines().any(|l| l == format!("aml/src/{link}")),
                "not listed: {out}"
            );
        }
        std::fs::remove_file(&path).unwrap();
    }
    // A symlinked folder pointing out is never walked either.
    std::os::unix::fs::symlink(root.path(), config.join("aml/src/root")).unwrap();
    let (code, out, err) = run_cli(&config, &["check-config", "--list-files"], &[]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(!out.contains("secrets.env"), "{out}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_out_of_the_folder_at_run_time_fails_the_rollout_with_nothing_uploaded() {
    let (t, _azurite, proxy) = with_uploads().await;
    let (dir, config) = seed();
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    app.post_event(&model_event("fraud-model", "3", json!({})))
        .await;
    // Between the event and the upload, a file becomes a link to the process's environment.
    std::os::unix::fs::symlink(
        "/proc/self/environ",
        dir.path().join("aml_yamls/scripts/settings.txt"),
    )
    .unwrap();
    let record = t
        .reconcile_model_until(&app, "fraud-model", "3", "failed")
        .await;
    let rollout = &record["rollout"];
    assert_eq!(rollout["configuration_problem"], true, "{record:#}");
    let failure = rollout["failure"].as_str().unwrap();
    assert!(
        failure.contains("settings.txt") && failure.contains("points to /proc/"),
        "{failure}"
    );
    assert!(
        proxy.state.lock().unwrap().requests.is_empty(),
        "nothing reached storage: {:?}",
        proxy.state.lock().unwrap().requests
    );
    assert!(t.arm.with(|s| s.deployment_puts.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_file_goes_in_blocks_and_an_interrupted_upload_resumes_in_the_same_container() {
    let (t, azurite, proxy) = with_uploads().await;
    let (dir, config) = seed();
    let big = big_file();
    // Sorts before score.py: it is sent first.
    std::fs::write(dir.path().join("aml_yamls/scripts/a_weights.bin"), &big).unwrap();
    // The storage account goes away after two blocks.
    proxy.state.lock().unwrap().fail_after_blocks = Some(2);
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    app.post_event(&model_event("fraud-model", "5", json!({})))
        .await;
    let pass = app.post_reconcile().await;
    assert_eq!(pass.status, 200, "{}", pass.raw);
    let record = t.record_of("fraud-model", "5").await;
    assert_eq!(record["rollout"]["phase"], "preparing_assets", "{record:#}");
    let staged = proxy.state.lock().unwrap().block_puts;
    assert!(staged <= 2, "{staged}");

    proxy.state.lock().unwrap().fail_after_blocks = None;
    t.reconcile_model_until(&app, "fraud-model", "5", "succeeded")
        .await;
    let record = t.record_of("fraud-model", "5").await;
    let name = record["rollout"]["assets"]["code_name"].as_str().unwrap();
    let container = container_for(name);
    let (bytes, _) = azurite.blob(&container, "scripts/a_weights.bin").await;
    assert!(bytes == big, "the blob is the file, byte for byte");
    let state = proxy.state.lock().unwrap();
    assert_eq!(
        state.block_puts, 3,
        "each block sent once, across both passes: {:?}",
        state.requests
    );
    assert_eq!(state.blob_puts, 2, "one Put Block List and one Put Blob");
    drop(state);
    // Every step asked for the same pending upload.
    let starts = t
        .arm
        .with(|s| s.assets.calls_to("POST", "startPendingUpload"));
    assert!(starts.len() >= 2, "{starts:?}");
    let id = &record["rollout"]["assets"]["pending_upload_id"];
    assert!(id.is_string());
    for start in &starts {
        assert_eq!(&start.body["pendingUploadId"], id, "{start:?}");
    }
    assert!(t.arm.violations().is_empty(), "{:?}", t.arm.violations());
}

#[tokio::test(flavor = "multi_thread")]
async fn content_changed_after_the_event_is_refused_not_registered_under_the_old_hash() {
    let (t, azurite, _proxy) = with_uploads().await;
    let (dir, config) = seed();
    let app = t.spawn_in(dir.path(), &config, &[]).await;
    app.post_event(&model_event("fraud-model", "4", json!({})))
        .await;
    // Same size, other bytes: only hashing what is sent can tell.
    let score = dir.path().join("aml_yamls/scripts/score.py");
    let mut text = std::fs::read(&score).unwrap();
    text[0] = if text[0] == b'#' { b'x' } else { b'#' };
    std::fs::write(&score, &text).unwrap();
    let record = t
        .reconcile_model_until(&app, "fraud-model", "4", "failed")
        .await;
    let failure = record["rollout"]["failure"].as_str().unwrap();
    assert!(
        failure.contains("changed since the event") && failure.contains("replay"),
        "{failure}"
    );
    assert_eq!(record["rollout"]["configuration_problem"], true);
    assert!(
        t.arm
            .with(|s| s.assets.calls_to("PUT", "codes/").is_empty())
    );
    assert!(t.arm.with(|s| s.deployment_puts.is_empty()));
    // No completion marker: nobody can take the container for a finished upload.
    let name = record["rollout"]["assets"]["code_name"].as_str().unwrap();
    let (_, metadata) = azurite.blob(&container_for(name), "scripts/score.py").await;
    assert!(!metadata.contains_key("upload_status"), "{metadata:?}");
}

/// `n` small files under a temporary folder.
fn small_files(n: usize) -> (tempfile::TempDir, Vec<Outgoing>) {
    let dir = tempfile::tempdir().unwrap();
    let files = (0..n)
        .map(|i| {
            let path = dir.path().join(format!("f{i:05}.txt"));
            std::fs::write(&path, format!("file {i}\n")).unwrap();
            Outgoing {
                blob: format!("src/f{i:05}.txt"),
                size: std::fs::metadata(&path).unwrap().len(),
                path,
            }
        })
        .collect();
    (dir, files)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upload_stops_at_its_deadline_and_continues_from_there() {
    let azurite = Azurite::from_connection_string(&azurite());
    let proxy = UploadProxy::start(&azurite).await;
    // A slow link: every PUT takes 300 ms.
    proxy.state.lock().unwrap().put_delay = Some(Duration::from_millis(300));
    let container_name = "up-slow-link";
    azurite.create_container(container_name).await;
    let sas = format!(
        "{}/{container_name}?{}",
        proxy.blob_endpoint,
        azurite.account_sas()
    );
    let container = SasContainer::new(&sas, &aml_autodeploy::http::Http::new()).unwrap();
    let (_dir, files) = small_files(60);
    let mut expected = UploadChain::default();
    for f in &files {
        use sha2::Digest as _;
        let sha: [u8; 32] = sha2::Sha256::digest(std::fs::read(&f.path).unwrap()).into();
        expected.fold(&f.blob, f.size, &sha);
    }
    let mut done = 0;
    let mut chain = UploadChain::default();
    let mut visits = 0;
    while done < files.len() {
        visits += 1;
        assert!(visits < 20, "no progress");
        let began = Instant::now();
        let sent = stream::send(
            &container,
            &files,
            done,
            chain,
            began + Duration::from_millis(600),
        )
        .await;
        // Requests already sent finish; nothing new starts after the deadline.
        let took = began.elapsed();
        assert!(took < Duration::from_millis(600 + 300 + 500), "{took:?}");
        assert!(sent.error.is_none(), "{:?}", sent.error);
        assert!(sent.done > done, "progress each visit");
        done = sent.done;
        chain = sent.chain;
    }
    assert!(visits >= 2, "the deadline cut the first visit short");
    assert_eq!(
        chain, expected,
        "the chain over what was sent is the plan's"
    );
    assert_eq!(azurite.list(container_name).await.len(), files.len());
    assert_eq!(
        proxy.state.lock().unwrap().blob_puts,
        files.len(),
        "no file sent twice"
    );
}

#[test]
fn loading_a_config_lists_code_folders_and_hashes_them_only_when_a_plan_needs_it() {
    use aml_autodeploy::config::{Config, RuleAction};
    let (dir, config) = seed();
    let path = dir.path().join("autodeploy.yml");
    std::fs::write(&path, config).unwrap();
    let loaded = Config::load(&path).unwrap();
    let RuleAction::AzureMl(azureml) = &loaded.rules[0].action else {
        panic!("a direct deployment rule");
    };
    let code = azureml.template.assets.code.as_ref().unwrap();
    assert_eq!(code.hash, "", "start-up reads no file's content");
    let hashed = code.hashed();
    assert_eq!(hashed.hash.len(), 64);
    assert_eq!(hashed.upload_digest.len(), 64);
    // Kept while the listing is the same; computed again once a file changes.
    assert_eq!(code.hashed().hash, hashed.hash);
    std::thread::sleep(Duration::from_millis(20));
    let score = dir.path().join("aml_yamls/scripts/score.py");
    let mut text = std::fs::read(&score).unwrap();
    text[0] ^= 1;
    std::fs::write(&score, text).unwrap();
    assert_ne!(code.hashed().hash, hashed.hash);
}
