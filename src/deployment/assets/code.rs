//! A local `code_configuration.code` folder, listed and hashed exactly as az ml does it.
//!
//! When a deployment's code is a local folder, az ml (azure-ai-ml 1.35.2) looks the code up by
//! a content hash (`hash_version` 202208) and, when the workspace does not have it yet, uploads
//! the folder's files to `<folder name>/<relative path>` blobs. To reuse what az ml uploaded
//! (and to let az ml reuse what we upload) this module reproduces the SDK's behaviour, read in
//! `azure/ai/ml/_utils/_asset_utils.py` and checked against vectors the SDK computes
//! (`scripts/code-hash-goldens.py`):
//!
//! - **Walk** (`get_upload_files_from_folder`): `os.walk(folder, followlinks=True)`. Symlinked
//!   folders are entered, a symlinked file contributes its target's size and bytes, empty
//!   folders contribute nothing, and a sub-folder that cannot be listed is skipped silently.
//! - **Ignore file** (`get_ignore_file`): `.amlignore` in the folder itself, else `.gitignore`
//!   there, else none; never merged, never from a sub-folder. Each file (never a directory) is
//!   tested on its own, the last matching pattern wins. The path tested is the file's path
//!   relative to the ignore file's *resolved* location, with the directories leading to it
//!   resolved too: a file reached through a symlinked folder `alias -> real` is tested as
//!   `real/...`, although it is hashed and uploaded as `alias/...`.
//! - **Hash** (`_get_file_list_content_hash`): SHA-256 of the file count, then `#path#size` for
//!   each file, then every file's bytes, the files ordered by their relative path lower-cased.
//! - **Upload** (`upload_directory`): the same files, submitted in the order of their
//!   (resolved local path, blob name) pairs; the first pair's blob is the "indicator" that
//!   receives `upload_status=completed` once all files are up.
//!
//! Where the SDK would hang, recurse without end or crash with a Python error (a symlink loop,
//! a FIFO, a file name that is not UTF-8, a broken symlink, a pattern Python's `re` rejects),
//! [`CodeFolder::scan`] returns an error instead.
//!
//! Unlike the SDK, nothing outside a boundary (the config file's folder) is listed or read: a
//! file, a folder or an ignore file that resolves (after symlinks) outside it is refused, naming
//! the entry and where it points. Otherwise a symlink to `/proc/self/environ` or `../../.env`
//! would upload the app's secrets to the workspace's storage.
//!
//! Listing ([`CodeFolder::list`]) reads no file's content: it is what start-up pays. The content
//! hash reads every byte, so it is computed when a plan needs it ([`CodeFolder::scan`]).

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use regex::Regex;
use sha2::{Digest, Sha256};

/// One file of a code folder, as az ml hashes and uploads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeFile {
    /// Path relative to the code folder, `/`-separated, without `./` (e.g. `lib/features.py`).
    /// A file reached through a symlink keeps the symlink's name here.
    pub relative: String,
    /// The file's resolved location on disk (symlinks followed): what is read and uploaded.
    pub path: PathBuf,
    /// Size in bytes, of the symlink's target for a symlink.
    pub size: u64,
}

/// A listed (and, from [`CodeFolder::scan`], hashed) code folder: the files az ml would upload,
/// and their content hash.
///
/// Only [`CodeFolder::list`] and [`CodeFolder::scan`] build one, so it always holds at least one
/// file.
#[derive(Debug, Clone)]
pub struct CodeFolder {
    folder_name: String,
    files: Vec<CodeFile>,
    /// Empty until hashed.
    hash: String,
    /// The digest of what is uploaded (see [`UploadChain`]); empty until hashed.
    upload_digest: String,
    /// A copy of the first file in upload order (so that no lookup can fail).
    indicator: CodeFile,
}

/// Why a code folder cannot be hashed or uploaded.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The code path does not exist.
    #[error("the code folder {0} does not exist")]
    NotFound(PathBuf),
    /// The code path is a file, not a folder.
    #[error("the code path {0} is not a folder")]
    NotADirectory(PathBuf),
    /// No file is left once the ignore file has been applied (az ml refuses such a folder).
    #[error(
        "the code folder {0} has no file to upload: it is empty, or its .amlignore/.gitignore excludes every file"
    )]
    Empty(PathBuf),
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A line of the ignore file that az ml cannot use (it fails with a Python error on it).
    #[error("{file}, line {line}: az ml cannot use the ignore pattern {pattern:?}: {why}")]
    BadIgnorePattern {
        /// The ignore file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line, right-trimmed.
        pattern: String,
        /// What is wrong with it.
        why: String,
    },
    /// An entry that resolves (after symlinks) outside the boundary: never listed or read.
    #[error(
        "{path} points to {target}, outside the config file's folder {boundary}: every file of a code folder must resolve inside it (replace the symlink with a copy of what it points to, or move that inside the folder)"
    )]
    Outside {
        /// The entry in the code folder.
        path: PathBuf,
        /// Where it resolves to.
        target: PathBuf,
        /// The folder it must stay inside.
        boundary: PathBuf,
    },
    /// A file's size changed while it was read.
    #[error("{0} changed while it was read; the code folder must not change while it is hashed")]
    Changed(PathBuf),
    /// Something in the folder that az ml cannot upload either.
    #[error("{path}: {why}")]
    Unsupported {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl CodeFolder {
    /// [`CodeFolder::list`], then the content hash and the upload digest (streaming each file's
    /// bytes once; files are not held in memory).
    pub fn scan(folder: &Path, boundary: &Path) -> Result<CodeFolder, CodeError> {
        let mut listed = Self::list(folder, boundary)?;
        listed.digest()?;
        Ok(listed)
    }

    /// Walks `folder` and applies its ignore file, reading no file's content. Every listed file,
    /// every folder walked and the ignore file must resolve inside `boundary` (a folder; the
    /// config file's) and every file must be a regular file.
    pub fn list(folder: &Path, boundary: &Path) -> Result<CodeFolder, CodeError> {
        let boundary = fs::canonicalize(boundary).map_err(|e| io_error(boundary, e))?;
        let meta = fs::metadata(folder).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => CodeError::NotFound(folder.to_path_buf()),
            _ => io_error(folder, source),
        })?;
        if !meta.is_dir() {
            return Err(CodeError::NotADirectory(folder.to_path_buf()));
        }
        // The SDK resolves the folder before walking and names the blobs after the resolved
        // folder's own name (`os.path.basename(Path(source).resolve())`).
        let root = fs::canonicalize(folder).map_err(|e| io_error(folder, e))?;
        inside(folder, &root, &boundary)?;
        let folder_name = match root.file_name() {
            Some(name) => utf8(name, &root)?.to_owned(),
            None => String::new(),
        };
        let ignore = IgnoreRules::load(&root, &boundary)?;

        let mut found = Vec::new();
        let mut stack = Vec::new();
        walk(&root, &root, "", &boundary, &mut stack, &mut found, true)?;

        let mut files = Vec::with_capacity(found.len());
        for entry in found {
            let match_path = relative_to(&entry.dir_real.join(&entry.name), &ignore.base);
            if ignore.is_excluded(&match_path) {
                continue;
            }
            let on_disk = entry.dir_real.join(&entry.name);
            let relative = utf8(&entry.name, &on_disk)
                .map(|name| format!("{}{name}", entry.prefix))
                .and_then(|relative| {
                    if entry.prefix_is_utf8 {
                        Ok(relative)
                    } else {
                        Err(not_utf8(&on_disk))
                    }
                })?;
            let path = fs::canonicalize(&on_disk).map_err(|e| io_error(&on_disk, e))?;
            inside(&on_disk, &path, &boundary)?;
            let meta = fs::metadata(&path).map_err(|e| io_error(&path, e))?;
            if !meta.is_file() {
                return Err(CodeError::Unsupported {
                    path: on_disk,
                    why: "not a regular file (az ml would try to read it as one)",
                });
            }
            files.push((
                relative.to_lowercase(),
                CodeFile {
                    relative,
                    path,
                    size: meta.len(),
                },
            ));
        }
        // Python's sort is stable: names equal once lower-cased keep the walk's order.
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let files: Vec<CodeFile> = files.into_iter().map(|(_, file)| file).collect();
        let Some(indicator) = files.iter().min_by(|a, b| upload_cmp(a, b)).cloned() else {
            return Err(CodeError::Empty(folder.to_path_buf()));
        };
        Ok(CodeFolder {
            folder_name,
            files,
            hash: String::new(),
            upload_digest: String::new(),
            indicator,
        })
    }

    /// Reads every file once: the content hash (in hash order) and each file's SHA-256, folded
    /// into the upload digest (in upload order).
    fn digest(&mut self) -> Result<(), CodeError> {
        let mut hasher = Sha256::new();
        hasher.update(self.files.len().to_string().as_bytes());
        for file in &self.files {
            hasher.update(format!("#{}#{}", file.relative, file.size).as_bytes());
        }
        let mut per_file = std::collections::HashMap::with_capacity(self.files.len());
        let mut buffer = vec![0u8; 256 * 1024];
        for file in &self.files {
            let mut reader = fs::File::open(&file.path).map_err(|e| io_error(&file.path, e))?;
            let mut own = Sha256::new();
            let mut read = 0u64;
            loop {
                let n = io::Read::read(&mut reader, &mut buffer)
                    .map_err(|e| io_error(&file.path, e))?;
                if n == 0 {
                    break;
                }
                read += n as u64;
                hasher.update(&buffer[..n]);
                own.update(&buffer[..n]);
            }
            if read != file.size {
                return Err(CodeError::Changed(file.path.clone()));
            }
            per_file.insert(file.relative.as_str(), <[u8; 32]>::from(own.finalize()));
        }
        let mut chain = UploadChain::default();
        for file in self.upload_order() {
            chain.fold(
                &self.blob_name(file),
                file.size,
                &per_file[file.relative.as_str()],
            );
        }
        self.hash = hex(&hasher.finalize());
        self.upload_digest = chain.hex();
        Ok(())
    }

    /// The folder's own name after resolving it (`./src` → `src`, `.` → the current
    /// folder's name, `../../model-1/onlinescoring/` → `onlinescoring`); the blobs' prefix.
    pub fn folder_name(&self) -> &str {
        &self.folder_name
    }

    /// The files, in the order the content hash reads them.
    pub fn files(&self) -> &[CodeFile] {
        &self.files
    }

    /// The content hash (`hash_sha256`, `hash_version` 202208): 64 lower-case hex characters
    /// (empty when only listed).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The [`UploadChain`] over every file in upload order, as hex (empty when only listed).
    pub fn upload_digest(&self) -> &str {
        &self.upload_digest
    }

    /// Cheap evidence of the listing (names, sizes, modification times): equal fingerprints
    /// mean an earlier hash still applies, without reading a byte.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for file in &self.files {
            let modified = fs::metadata(&file.path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            hasher.update(
                format!(
                    "{}\0{}\0{}\0{modified}\n",
                    file.relative,
                    file.path.display(),
                    file.size
                )
                .as_bytes(),
            );
        }
        hex(&hasher.finalize())
    }

    /// The blob a file is uploaded to: `<folder name>/<relative path>`.
    pub fn blob_name(&self, file: &CodeFile) -> String {
        format!("{}/{}", self.folder_name, file.relative)
    }

    /// The files in the order the SDK submits their uploads: sorted by (resolved local path,
    /// blob name). A symlink sorts by its target's location, which may lie outside the folder.
    pub fn upload_order(&self) -> Vec<&CodeFile> {
        let mut order: Vec<&CodeFile> = self.files.iter().collect();
        order.sort_by(|a, b| upload_cmp(a, b));
        order
    }

    /// The file whose blob carries `upload_status=completed` (and the asset's name and
    /// version) once the upload is complete: the first in [`CodeFolder::upload_order`]. The SDK
    /// reads this blob's metadata first and skips the upload when it is already completed.
    pub fn indicator(&self) -> &CodeFile {
        &self.indicator
    }
}

/// The SDK's upload order: `sorted()` over (resolved local path, blob name) pairs. Python
/// compares the `as_posix()` strings; for UTF-8 paths byte order is code point order. All blob
/// names share the folder prefix, so comparing the relative paths after it is the same.
fn upload_cmp(a: &CodeFile, b: &CodeFile) -> Ordering {
    a.path
        .as_os_str()
        .as_encoded_bytes()
        .cmp(b.path.as_os_str().as_encoded_bytes())
        .then_with(|| a.relative.cmp(&b.relative))
}

/// A file found by the walk, before the ignore file is applied.
struct Found {
    /// The resolved folder it was found in (the SDK resolves each walked folder).
    dir_real: PathBuf,
    /// Its name in that folder.
    name: std::ffi::OsString,
    /// The walked (unresolved) folder relative to the code folder, ending in `/`, or empty.
    prefix: String,
    prefix_is_utf8: bool,
}

/// `os.walk(dir, followlinks=True)`, top-down: the folder's files in directory order, then each
/// sub-folder the same way. `stack` holds the resolved folders being walked, to stop at loops
/// (where the SDK would descend until the OS refuses the path).
fn walk(
    dir: &Path,
    dir_real: &Path,
    prefix: &str,
    boundary: &Path,
    stack: &mut Vec<PathBuf>,
    found: &mut Vec<Found>,
    prefix_is_utf8: bool,
) -> Result<(), CodeError> {
    // os.walk drops a folder it cannot list, or whose listing fails half-way, without a word.
    let entries = match fs::read_dir(dir).and_then(|it| it.collect::<io::Result<Vec<_>>>()) {
        Ok(entries) => entries,
        // (For the code folder itself the SDK ends up refusing an empty folder; the reason helps more.)
        Err(e) if stack.is_empty() => return Err(io_error(dir, e)),
        Err(_) => return Ok(()),
    };
    stack.push(dir_real.to_path_buf());
    let mut subdirs = Vec::new();
    for entry in entries {
        // `DirEntry.is_dir()` follows symlinks, and an error counts as "not a folder".
        let is_dir = fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
        if is_dir {
            subdirs.push(entry.file_name());
        } else {
            found.push(Found {
                dir_real: dir_real.to_path_buf(),
                name: entry.file_name(),
                prefix: prefix.to_owned(),
                prefix_is_utf8,
            });
        }
    }
    for name in subdirs {
        let sub = dir.join(&name);
        let sub_real = fs::canonicalize(&sub).map_err(|e| io_error(&sub, e))?;
        // Never list a folder outside (a symlink to `/`, `/proc` or `..`).
        inside(&sub, &sub_real, boundary)?;
        if stack.contains(&sub_real) {
            return Err(CodeError::Unsupported {
                path: sub,
                why: "a symlink loop (az ml would follow it until the path grows too long)",
            });
        }
        let sub_prefix = format!("{prefix}{}/", name.to_string_lossy());
        let sub_is_utf8 = prefix_is_utf8 && name.to_str().is_some();
        walk(
            &sub,
            &sub_real,
            &sub_prefix,
            boundary,
            stack,
            found,
            sub_is_utf8,
        )?;
    }
    stack.pop();
    Ok(())
}

/// `os.path.relpath(path, base)` for two resolved absolute paths, `/`-separated (the SDK
/// normalises separators before matching). Non-UTF-8 parts are replaced lossily: such a file
/// can still be ignored, and is refused if it is not.
fn relative_to(path: &Path, base: &Path) -> String {
    let path: Vec<Component> = path.components().collect();
    let base: Vec<Component> = base.components().collect();
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_owned(); base.len() - common];
    parts.extend(
        path[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

/// The digest of an upload, file by file in upload order: `d = SHA-256(d ‖ blob name ‖ NUL ‖
/// size (8 bytes, little-endian) ‖ SHA-256(file))`, from 32 zero bytes. Computed when the plan is
/// made, and again from the bytes actually sent; 32 bytes of state carry it from one visit to the
/// next, so a resumed upload still checks everything it sent against the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadChain([u8; 32]);

impl UploadChain {
    /// Adds one file.
    pub fn fold(&mut self, blob: &str, size: u64, file_sha256: &[u8; 32]) {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(blob.as_bytes());
        hasher.update([0]);
        hasher.update(size.to_le_bytes());
        hasher.update(file_sha256);
        self.0 = hasher.finalize().into();
    }

    /// As 64 lower-case hex characters.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    /// From [`UploadChain::hex`]'s form.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses `real` (where `path` resolves) outside `boundary`.
fn inside(path: &Path, real: &Path, boundary: &Path) -> Result<(), CodeError> {
    if real.starts_with(boundary) {
        Ok(())
    } else {
        Err(CodeError::Outside {
            path: path.to_path_buf(),
            target: real.to_path_buf(),
            boundary: boundary.to_path_buf(),
        })
    }
}

fn io_error(path: &Path, source: io::Error) -> CodeError {
    CodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn not_utf8(path: &Path) -> CodeError {
    CodeError::Unsupported {
        path: path.to_path_buf(),
        why: "the name is not UTF-8 (az ml fails to hash it)",
    }
}

fn utf8<'a>(name: &'a OsStr, path: &Path) -> Result<&'a str, CodeError> {
    name.to_str().ok_or_else(|| not_utf8(path))
}

/// The one ignore file that applies to a code folder, compiled.
struct IgnoreRules {
    /// The folder paths are matched relative to: the resolved ignore file's folder.
    base: PathBuf,
    /// The patterns that are not comments or blank, in file order.
    rules: Vec<Rule>,
}

struct Rule {
    regex: Regex,
    /// `true` for a plain pattern (excludes), `false` for a `!` pattern (re-includes).
    excludes: bool,
}

impl IgnoreRules {
    /// `get_ignore_file`: `.amlignore`, else `.gitignore`, in the folder itself (an existing
    /// target counts: a broken symlink is no ignore file).
    fn load(root: &Path, boundary: &Path) -> Result<IgnoreRules, CodeError> {
        let none = IgnoreRules {
            base: root.to_path_buf(),
            rules: Vec::new(),
        };
        let Some(file) = [".amlignore", ".gitignore"]
            .iter()
            .map(|name| root.join(name))
            .find(|path| fs::metadata(path).is_ok())
        else {
            return Ok(none);
        };
        let resolved = fs::canonicalize(&file).map_err(|e| io_error(&file, e))?;
        inside(&file, &resolved, boundary)?;
        let bytes = fs::read(&resolved).map_err(|e| io_error(&file, e))?;
        // Read as Python's "utf-8-sig" text: one leading BOM dropped, strict UTF-8.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        let text = std::str::from_utf8(bytes).map_err(|_| {
            io_error(
                &file,
                io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
            )
        })?;
        let mut rules = Vec::new();
        for (index, line) in python_lines(text).enumerate() {
            let line = line.trim_end_matches(python_space);
            let bad = |why: String| CodeError::BadIgnorePattern {
                file: file.clone(),
                line: index + 1,
                pattern: line.to_owned(),
                why,
            };
            if let Some((regex, excludes)) = translate(line).map_err(bad)? {
                let regex = Regex::new(&regex).map_err(|e| bad(e.to_string()))?;
                rules.push(Rule { regex, excludes });
            }
        }
        Ok(IgnoreRules {
            base: resolved.parent().map_or(none.base, Path::to_path_buf),
            rules,
        })
    }

    /// `IgnoreFile.is_file_excluded`: the last matching pattern decides.
    fn is_excluded(&self, path: &str) -> bool {
        let mut excluded = false;
        for rule in &self.rules {
            if rule.regex.is_match(path) {
                excluded = rule.excludes;
            }
        }
        excluded
    }
}

/// The lines Python's text-mode file iteration yields (universal newlines: `\r\n`, `\r`, `\n`).
fn python_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(at) => {
                let skip = if current[at..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + skip..]).filter(|r| !r.is_empty());
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current).filter(|c| !c.is_empty())
            }
        }
    })
}

/// Python's `str.isspace()`: Unicode White_Space plus the four ASCII separators U+001C–U+001F.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A port of the SDK's vendored pathspec `GitWildMatchPattern.pattern_to_regex`, emitting a
/// Rust regex with the same matches. `Ok(None)` for comments and blank lines; otherwise the
/// regex and whether the pattern excludes (`false` for `!`).
///
/// Hand-written rather than `globset` or `ignore`'s gitignore matcher because the SDK departs
/// from git in ways those crates (rightly) do not: the line is trimmed on both sides (so an
/// escaped trailing space leaves a dangling backslash, which the SDK rejects), `dir/` matches
/// the files below `dir` and nothing else, a negation can re-include a file below an excluded
/// folder, bracket expressions follow Python's `re` (`[` is literal, a reversed range is an
/// error), and `$` also matches before a final newline.
fn translate(line: &str) -> Result<Option<(String, bool)>, String> {
    let pattern = line.trim_matches(python_space);
    if pattern.is_empty() || pattern.starts_with('#') || pattern == "/" {
        return Ok(None);
    }
    let (excludes, pattern) = match pattern.strip_prefix('!') {
        Some(rest) => (false, rest),
        None => (true, pattern),
    };
    let mut segs: Vec<&str> = pattern.split('/').collect();
    // Collapse runs of `**` segments.
    segs.dedup_by(|a, b| *a == "**" && *b == "**");
    // `**/` matches everything except files in the root folder.
    let everything_below = segs.len() == 2 && segs[0] == "**" && segs[1].is_empty();
    if segs.first().is_some_and(|s| s.is_empty()) {
        // A leading `/` anchors the pattern to the root.
        segs.remove(0);
    } else if (segs.len() == 1 || (segs.len() == 2 && segs[1].is_empty())) && segs[0] != "**" {
        // A single name (or `name/`) matches at any depth.
        segs.insert(0, "**");
    }
    if segs.is_empty() {
        return Err("nothing is left to match once the `!` is removed".to_owned());
    }
    if segs.len() > 1 && segs.last().is_some_and(|s| s.is_empty()) {
        // `dir/` matches what is below `dir`.
        if let Some(last) = segs.last_mut() {
            *last = "**";
        }
    }
    if everything_below {
        return Ok(Some((r"^.+/.*\n?\z".to_owned(), excludes)));
    }
    let mut out = String::from("^");
    let mut need_slash = false;
    let end = segs.len() - 1;
    for (i, seg) in segs.iter().enumerate() {
        if *seg == "**" {
            if i == 0 && i == end {
                out.push_str(".+");
            } else if i == 0 {
                out.push_str("(?:.+/)?");
                need_slash = false;
            } else if i == end {
                out.push_str("/.*");
            } else {
                out.push_str("(?:/.+)?");
                need_slash = true;
            }
        } else {
            if need_slash {
                out.push('/');
            }
            if *seg == "*" {
                out.push_str("[^/]+");
            } else {
                out.push_str(&translate_segment(seg)?);
            }
            if i == end {
                // Without a trailing `/`, a pattern matches a file or everything below a folder.
                out.push_str("(?:/.*)?");
            }
            need_slash = true;
        }
    }
    // Python's `$` also matches just before a final newline.
    out.push_str(r"\n?\z");
    Ok(Some((out, excludes)))
}

/// `GitWildMatchPattern._translate_segment_glob`: one path segment's glob as a regex.
fn translate_segment(seg: &str) -> Result<String, String> {
    let chars: Vec<char> = seg.chars().collect();
    let mut out = String::new();
    let mut escape = false;
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        i += 1;
        if escape {
            escape = false;
            out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
        } else if c == '\\' {
            escape = true;
        } else if c == '*' {
            out.push_str("[^/]*");
        } else if c == '?' {
            out.push_str("[^/]");
        } else if c == '[' {
            // Find the closing `]`: a `!` and then a `]` right after `[` do not close it.
            let mut j = i;
            if chars.get(j) == Some(&'!') {
                j += 1;
            }
            if chars.get(j) == Some(&']') {
                j += 1;
            }
            while chars.get(j).is_some_and(|&c| c != ']') {
                j += 1;
            }
            if j < chars.len() {
                out.push_str(&bracket(&chars[i..=j])?);
                i = j + 1;
            } else {
                // No closing bracket: a literal `[`.
                out.push_str(r"\[");
            }
        } else {
            out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
        }
    }
    if escape {
        return Err(
            "it ends with a backslash that escapes nothing (az ml strips trailing \
                    spaces, so `\\ ` cannot keep one)"
                .to_owned(),
        );
    }
    Ok(out)
}

/// A bracket expression (the characters after `[`, up to and including its `]`), as pathspec
/// hands it to Python's `re`, rewritten as an explicit Rust class: `!` negates, a leading `^`
/// is literal, `]` first is literal, `a-z` is a range (an error when reversed, as in Python),
/// every other character (`[`, `\`, `&`, `~`…) is literal.
fn bracket(expr: &[char]) -> Result<String, String> {
    let (negated, body) = match expr.split_first() {
        Some(('!', rest)) => (true, rest),
        _ => (false, expr),
    };
    let mut items: Vec<(char, char)> = Vec::new();
    let mut k = 0;
    while let Some(&this) = body.get(k) {
        k += 1;
        if this == ']' && !items.is_empty() {
            break;
        }
        if body.get(k) == Some(&'-') {
            k += 1;
            let Some(&that) = body.get(k) else {
                return Err("unterminated bracket expression".to_owned());
            };
            k += 1;
            if that == ']' {
                items.push((this, this));
                items.push(('-', '-'));
                break;
            }
            if that < this {
                return Err(format!(
                    "`{this}-{that}` is a reversed range (Python's re: bad character range)"
                ));
            }
            items.push((this, that));
        } else {
            items.push((this, this));
        }
    }
    let mut out = String::from(if negated { "[^" } else { "[" });
    for (lo, hi) in items {
        out.push_str(&format!("\\x{{{:X}}}", u32::from(lo)));
        if hi != lo {
            out.push_str(&format!("-\\x{{{:X}}}", u32::from(hi)));
        }
    }
    out.push(']');
    Ok(out)
}

#[cfg(test)]
mod tests;
