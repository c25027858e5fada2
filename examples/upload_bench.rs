//! Upload driver for `scripts/upload-bench.sh` (not part of the product): uploads one code folder
//! to a container in Azurite exactly as a rollout's `preparing_assets` phase does (the folder
//! listed with its boundary, the files streamed in upload order by `assets::stream`, the completion
//! marker last), in successive visits that each stop sending at their deadline, and prints a JSON
//! line: wall time, bytes, visits and the longest visit.
//!
//! Usage: upload_bench <folder> <container> [--visit-secs N] (the Azurite connection string in
//! AUTODEPLOY_TEST_STORAGE, as `scripts/with-azurite.sh` exports it)

use std::time::{Duration, Instant};

use aml_autodeploy::actions::azureml::stream::{self, Outgoing};
use aml_autodeploy::actions::azureml::upload::SasContainer;
use aml_autodeploy::deployment::assets::code::{CodeFolder, UploadChain};
use aml_autodeploy::http::Http;
use base64::Engine as _;
use hmac::{Hmac, Mac};

/// An account SAS for Azurite's development account (blob; service, container, object; read,
/// write, delete, list, add, create), as the Storage service documents it (version 2021-08-06).
fn account_sas(account: &str, key_base64: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_base64)
        .expect("AccountKey is base64");
    let expiry = (time::OffsetDateTime::now_utc() + time::Duration::hours(2))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (permissions, services, types, protocol, version) =
        ("rwdlac", "b", "sco", "https,http", "2021-08-06");
    let to_sign = format!(
        "{account}\n{permissions}\n{services}\n{types}\n\n{expiry}\n\n{protocol}\n{version}\n\n"
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", version)
        .append_pair("ss", services)
        .append_pair("srt", types)
        .append_pair("sp", permissions)
        .append_pair("se", &expiry)
        .append_pair("spr", protocol)
        .append_pair("sig", &signature)
        .finish()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (folder, container_name) = (&args[1], &args[2]);
    let visit = args
        .iter()
        .position(|a| a == "--visit-secs")
        .map(|i| Duration::from_secs_f64(args[i + 1].parse().expect("seconds")))
        .unwrap_or(Duration::from_secs(150));
    let connection = std::env::var("AUTODEPLOY_TEST_STORAGE").expect("AUTODEPLOY_TEST_STORAGE");
    let part = |name: &str| {
        connection
            .split(';')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing"))
            .trim_end_matches('/')
            .to_string()
    };
    let sas = account_sas(&part("AccountName"), &part("AccountKey"));
    let endpoint = part("BlobEndpoint");
    let http = Http::new();
    let created = http
        .client()
        .put(format!(
            "{endpoint}/{container_name}?restype=container&{sas}"
        ))
        .header("x-ms-version", "2021-08-06")
        .header("content-length", "0")
        .send()
        .await
        .expect("create the container");
    assert!(
        created.status().is_success() || created.status().as_u16() == 409,
        "{}",
        created.status()
    );
    let container = SasContainer::new(&format!("{endpoint}/{container_name}?{sas}"), &http)
        .expect("container URL");

    let began = Instant::now();
    let path = std::path::Path::new(folder);
    let boundary = path.parent().unwrap_or(path);
    let listed = CodeFolder::list(path, boundary).expect("list the folder");
    let files: Vec<Outgoing> = listed
        .upload_order()
        .into_iter()
        .map(|f| Outgoing {
            blob: listed.blob_name(f),
            path: f.path.clone(),
            size: f.size,
        })
        .collect();
    let (mut done, mut chain, mut visits, mut longest, mut bytes) =
        (0, UploadChain::default(), 0, Duration::ZERO, 0u64);
    while done < files.len() {
        visits += 1;
        let start = Instant::now();
        let sent = stream::send(&container, &files, done, chain, start + visit).await;
        longest = longest.max(start.elapsed());
        if let Some(e) = sent.error {
            panic!("visit {visits}: {e}");
        }
        done = sent.done;
        chain = sent.chain;
        bytes += sent.bytes;
    }
    let indicator = listed.blob_name(listed.indicator());
    container
        .mark_completed(&indicator, container_name, "1")
        .await
        .expect("marker");
    println!(
        "{}",
        serde_json::json!({
            "files": files.len(),
            "bytes": bytes,
            "wall_s": began.elapsed().as_secs_f64(),
            "visits": visits,
            "visit_deadline_s": visit.as_secs_f64(),
            "longest_visit_s": longest.as_secs_f64(),
            "digest": chain.hex(),
        })
    );
}
