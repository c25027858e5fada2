//! The config file's folder, which every file the config names must stay inside: deployment
//! YAMLs, smoke-test requests, and what a deployment YAML names in turn (its local code folder and
//! its conda file). `scripts/package.sh` ships the config with the files `check-config
//! --list-files` names, relative to the config file: a file outside the folder could not travel
//! with it, and a config must never be a way to read (or print) a file elsewhere on the machine.
//!
//! A reference is refused when it is absolute, or when it leaves the folder after `..` and
//! symlinks are resolved. The files of a code folder are held to the same rule, each after its
//! symlinks are resolved (`deployment::assets::code`): a symlink may point only inside the
//! folder; see `docs/direct-deployment.md`.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The folder of a config file, and its real (symlink-free) location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFolder {
    /// As given (relative to the working directory, or absolute).
    folder: PathBuf,
    /// The real location; the lexical absolute path when the folder does not exist.
    real: PathBuf,
}

/// Why a reference is refused. Says what was written, never what a file contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    /// An absolute path.
    Absolute(String),
    /// A path that leaves the config file's folder (through `..` or a symlink).
    Outside(String),
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathProblem::Absolute(written) => write!(
                f,
                "{written:?} is an absolute path; use a path relative to the config file's folder, inside it"
            ),
            PathProblem::Outside(written) => write!(
                f,
                "{written:?} is outside the config file's folder; files the config uses must be inside it (the package carries only that folder)"
            ),
        }
    }
}

impl ConfigFolder {
    /// The folder of the config file at `config_file`.
    pub fn of(config_file: &Path) -> Self {
        Self::at(
            config_file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
    }

    /// The folder `folder` itself.
    pub fn at(folder: &Path) -> Self {
        let real = std::fs::canonicalize(folder).unwrap_or_else(|_| absolute(folder));
        Self {
            folder: folder.to_path_buf(),
            real,
        }
    }

    /// The real (symlink-free) location.
    pub fn real(&self) -> &Path {
        &self.real
    }

    /// The folder as given: relative references from the config file resolve against it.
    pub fn path(&self) -> &Path {
        &self.folder
    }

    /// Resolves `written`, relative to `from` (a folder inside this one: the config file's own,
    /// or a deployment YAML's), and checks that the result stays inside. Returns the path to
    /// open (`from` joined with `written`). A file that does not exist is only checked
    /// lexically; opening it then fails with the caller's "cannot read".
    pub fn resolve(&self, from: &Path, written: &str) -> Result<PathBuf, PathProblem> {
        let relative = Path::new(written);
        if relative.has_root() || relative.is_absolute() || has_prefix(relative) {
            return Err(PathProblem::Absolute(written.to_string()));
        }
        let joined = from.join(relative);
        let outside = || PathProblem::Outside(written.to_string());
        if !lexical(&absolute(&joined)).starts_with(lexical(&absolute(&self.folder))) {
            return Err(outside());
        }
        match std::fs::canonicalize(&joined) {
            Ok(real) if !real.starts_with(&self.real) => Err(outside()),
            _ => Ok(joined),
        }
    }
}

fn has_prefix(path: &Path) -> bool {
    matches!(path.components().next(), Some(Component::Prefix(_)))
}

/// `path` made absolute against the working directory, without touching the disk.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `path` with `.` and `name/..` removed without touching the disk (`a/../b/./c` → `b/c`);
/// a `..` that would climb above the start is kept, so it never compares as inside.
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            // `/..` is `/`.
            Component::ParentDir if out.has_root() => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config folder `root/config` with `requests/ok.json`, a secret beside it
    /// (`root/secret.json`), and symlinks to both.
    fn layout() -> (tempfile::TempDir, ConfigFolder) {
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("config");
        std::fs::create_dir_all(config.join("requests")).unwrap();
        std::fs::write(config.join("requests/ok.json"), "{}").unwrap();
        std::fs::write(root.path().join("secret.json"), "{\"secret\": 1}").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::symlink;
            symlink(root.path().join("secret.json"), config.join("leak.json")).unwrap();
            symlink(root.path(), config.join("up")).unwrap();
            symlink(config.join("requests/ok.json"), config.join("alias.json")).unwrap();
        }
        let folder = ConfigFolder::of(&config.join("autodeploy.yml"));
        (root, folder)
    }

    #[test]
    fn references_are_checked_after_dots_and_symlinks() {
        let (_root, folder) = layout();
        let base = folder.path().to_path_buf();
        let cases: &[(&str, Option<&str>)] = &[
            ("requests/ok.json", None),
            ("./requests/../requests/ok.json", None),
            ("requests/missing.json", None),
            ("../secret.json", Some("outside")),
            ("requests/../../secret.json", Some("outside")),
            ("../config/requests/ok.json", None),
            ("/etc/passwd", Some("absolute")),
            #[cfg(unix)]
            ("leak.json", Some("outside")),
            #[cfg(unix)]
            ("up/secret.json", Some("outside")),
            #[cfg(unix)]
            ("alias.json", None),
        ];
        for (written, expected) in cases {
            let got = folder.resolve(&base, written);
            match expected {
                None => assert_eq!(got, Ok(base.join(written)), "{written}"),
                Some(word) => {
                    let message = got.expect_err(written).to_string();
                    assert!(message.contains(word), "{written}: {message}");
                    assert!(!message.contains("secret\""), "{message}");
                }
            }
        }
    }

    #[test]
    fn a_yaml_folder_inside_may_name_files_beside_it_but_not_above_the_config() {
        let (_root, folder) = layout();
        let requests = folder.path().join("requests");
        assert!(folder.resolve(&requests, "ok.json").is_ok());
        assert!(folder.resolve(&requests, "../requests/ok.json").is_ok());
        assert!(folder.resolve(&requests, "../../secret.json").is_err());
    }

    #[test]
    fn lexical_never_climbs_into_an_inside_path() {
        assert_eq!(lexical(Path::new("a/../b/./c")), PathBuf::from("b/c"));
        assert_eq!(lexical(Path::new("../x")), PathBuf::from("../x"));
        assert_eq!(lexical(Path::new("/a/../../x")), PathBuf::from("/x"));
    }
}
