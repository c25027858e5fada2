//! The assets `az ml online-deployment create` registers before the deployment PUT (azure-ai-ml
//! 1.35.2, see `shared/reference/az-ml-assets.md`): data assets for `data_collector`, the local
//! code folder (hashed, uploaded through a pending upload, registered as an anonymous code
//! version), and an inline environment version, or an `@latest` label to resolve.
//!
//! Config time ([`AssetTemplate`], from the YAML): what each asset is, with hashes and bodies.
//! Event time ([`AssetPlan`], stored in the record): the same, with the names that depend on the
//! endpoint and deployment. Rollout time: the `preparing_assets` phase registers them, one step
//! at a time (`rollout/assets.rs`).

pub mod code;
pub mod collector;
pub mod environment;
mod pyyaml;
mod values;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::folder::{ConfigFolder, lexical};

pub use collector::{CollectorSpec, DataAsset};
pub use environment::{EnvironmentRef, InlineEnvironment};
pub(crate) use values::{json_map, scalar};

/// A local `code_configuration.code` folder, hashed as az ml hashes it.
///
/// Loading a config only lists the folder (start-up reads no file's content, whatever the
/// folder's size); the hash is computed when a plan needs it ([`LocalCode::hashed`]) and kept
/// for as long as the listing (names, sizes, modification times) stays the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalCode {
    /// The value in the YAML (`./scripts`).
    pub yaml_path: String,
    /// The folder on disk (absolute, or relative to the working directory as the config was).
    pub folder: PathBuf,
    /// The folder's own name: the blob prefix (`scripts`).
    pub folder_name: String,
    /// The content hash (`hash_version` 202208); empty until hashed.
    pub hash: String,
    /// The digest of the files in upload order ([`code::UploadChain`]): what the upload checks
    /// the bytes it sends against. Empty until hashed (and in records from older releases).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upload_digest: String,
    /// Why the folder could not be hashed when the plan was made, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// How many files are uploaded (after the ignore file).
    pub files: usize,
    /// The folder every file must resolve inside: the config file's folder, resolved. (Records
    /// from older releases have none: the code folder itself is the boundary then.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boundary: Option<PathBuf>,
    /// The hash computed for this config, shared by its clones.
    #[serde(skip)]
    cache: HashCache,
}

/// The last hash of a folder and the listing fingerprint it was computed for.
#[derive(Debug, Clone, Default)]
struct HashCache(Arc<Mutex<Option<(String, String, String)>>>);

impl PartialEq for HashCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl LocalCode {
    /// The folder every file must stay inside.
    pub fn boundary(&self) -> &Path {
        self.boundary.as_deref().unwrap_or(&self.folder)
    }

    /// This code with its hash and upload digest (computed now unless the listing is unchanged
    /// since the last time), or with `problem` set when the folder cannot be read.
    pub fn hashed(&self) -> LocalCode {
        let mut out = self.clone();
        if !out.hash.is_empty() {
            return out;
        }
        match self.compute() {
            Ok((hash, digest, files)) => {
                out.hash = hash;
                out.upload_digest = digest;
                out.files = files;
            }
            Err(e) => out.problem = Some(e.to_string()),
        }
        out
    }

    fn compute(&self) -> Result<(String, String, usize), code::CodeError> {
        let listed = code::CodeFolder::list(&self.folder, self.boundary())?;
        let fingerprint = listed.fingerprint();
        let mut cache = self.cache.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, hash, digest)) = cache.as_ref()
            && *seen == fingerprint
        {
            return Ok((hash.clone(), digest.clone(), listed.files().len()));
        }
        let scanned = code::CodeFolder::scan(&self.folder, self.boundary())?;
        let out = (
            scanned.hash().to_string(),
            scanned.upload_digest().to_string(),
            scanned.files().len(),
        );
        *cache = Some((fingerprint, out.0.clone(), out.1.clone()));
        Ok(out)
    }
}

/// The assets of a deployment YAML, as far as they are known without an event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssetTemplate {
    /// A local code folder to upload and register.
    pub code: Option<LocalCode>,
    /// An environment to register or resolve.
    pub environment: Option<InlineEnvironment>,
    /// `data_collector`: its data assets depend on the endpoint and deployment names.
    pub collector: Option<CollectorSpec>,
    /// Every local file the deployment needs (code files, conda files), for packaging.
    pub files: Vec<PathBuf>,
}

/// The assets to register before one deployment, in az ml's order: data, code, environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssetPlan {
    /// Data assets, one per collection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<DataAsset>,
    /// The code folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<LocalCode>,
    /// The environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<InlineEnvironment>,
}

impl AssetPlan {
    /// Nothing to register.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && self.code.is_none() && self.environment.is_none()
    }

    /// The steps, in words, for dry runs.
    pub fn steps(&self) -> Vec<String> {
        let mut steps: Vec<String> = self
            .data
            .iter()
            .map(|d| format!("register data asset {}:{} ({})", d.name, d.version, d.path))
            .collect();
        if let Some(code) = &self.code {
            match &code.problem {
                Some(why) => steps.push(format!(
                    "code folder {}: cannot be hashed ({why}); the rollout would fail",
                    code.yaml_path
                )),
                None => steps.push(format!(
                    "code folder {} ({} file(s), sha256 {}): reuse a code version with this hash, else upload it to a pending upload and register it as a new anonymous code version",
                    code.yaml_path, code.files, code.hash
                )),
            }
        }
        if let Some(env) = &self.environment {
            steps.push(env.describe());
        }
        steps
    }
}

/// `code_configuration.code` as az ml reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeRef {
    /// A registered code version (or registry asset): its id.
    Id(String),
    /// A local folder to upload.
    Local(LocalCode),
}

/// Resolves `code_configuration.code` relative to the YAML's folder `base` (a local folder must
/// be inside `root`, the config file's folder, and so must every file in it after symlinks):
/// registered references become ids; anything else is a local folder, listed now (not hashed:
/// see [`LocalCode::hashed`]) and checked to hold the scoring script. `files` collects the folder's files. Errors name the key under
/// `code_configuration` they are about (`code` or `scoring_script`).
pub fn code_ref(
    reference: &str,
    scoring_script: &str,
    base: &Path,
    root: &ConfigFolder,
    workspace: &str,
    files: &mut Vec<PathBuf>,
) -> Result<CodeRef, (&'static str, String)> {
    code_reference(reference, base, root, workspace, files)
        .map_err(|e| ("code", e))
        .and_then(|code| {
            if let CodeRef::Local(local) = &code {
                // The scoring script is uploaded with the code folder: it must be inside it
                // (lexically: symlinks inside a code folder are az ml's to follow).
                let written = Path::new(scoring_script);
                if written.has_root() || lexical(written).starts_with("..") {
                    return Err((
                        "scoring_script",
                        format!(
                            "{scoring_script:?} is not inside the code folder {}; it is uploaded with it",
                            local.yaml_path
                        ),
                    ));
                }
                let script = local.folder.join(written);
                if !script.is_file() {
                    return Err((
                        "scoring_script",
                        format!(
                            "{} not found (the scoring script is relative to the code folder {})",
                            script.display(),
                            local.yaml_path
                        ),
                    ));
                }
            }
            Ok(code)
        })
}

fn code_reference(
    reference: &str,
    base: &Path,
    root: &ConfigFolder,
    workspace: &str,
    files: &mut Vec<PathBuf>,
) -> Result<CodeRef, String> {
    let trimmed = reference.trim();
    // A bare `/subscriptions/…` is a local path to az ml's schema; only the prefixed id is an id.
    if trimmed.starts_with("azureml://") {
        return Ok(CodeRef::Id(trimmed.to_string()));
    }
    if let Some(bare) = trimmed.strip_prefix("azureml:") {
        if bare.starts_with("/subscriptions/") || bare.starts_with("azureml://") {
            return Ok(CodeRef::Id(bare.to_string()));
        }
        let Some((name, version)) = bare.split_once(':') else {
            return Err(format!(
                "{trimmed:?}: Version must be provided (azureml:NAME:VERSION); labels are not resolved for code"
            ));
        };
        if name.is_empty()
            || version.is_empty()
            || name.contains(['/', '@'])
            || version.contains(['/', ':'])
        {
            return Err(format!("{trimmed:?}: expected azureml:NAME:VERSION"));
        }
        return Ok(CodeRef::Id(format!(
            "{}/codes/{name}/versions/{version}",
            workspace.trim_end_matches('/')
        )));
    }
    if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        return Err(format!(
            "{trimmed:?}: remote code URLs are not supported; use a local folder or a registered code asset (azureml:NAME:VERSION)"
        ));
    }
    let folder = root.resolve(base, trimmed).map_err(|e| e.to_string())?;
    let boundary = root.real().to_path_buf();
    let listed = code::CodeFolder::list(&folder, &boundary).map_err(|e| e.to_string())?;
    files.extend(listed.files().iter().map(|f| folder.join(&f.relative)));
    Ok(CodeRef::Local(LocalCode {
        yaml_path: trimmed.to_string(),
        folder_name: listed.folder_name().to_string(),
        hash: String::new(),
        upload_digest: String::new(),
        problem: None,
        files: listed.files().len(),
        boundary: Some(boundary),
        folder,
        cache: HashCache::default(),
    }))
}

#[cfg(test)]
mod goldens;
