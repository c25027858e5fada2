use super::*;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/code-folders");

fn matches(pattern: &str, path: &str) -> Option<bool> {
    let (regex, excludes) = translate(pattern).ok()??;
    Regex::new(&regex).ok()?.is_match(path).then_some(excludes)
}

#[test]
fn every_fixture_matches_the_sdk_golden() {
    let mut cases: Vec<PathBuf> = fs::read_dir(FIXTURES)
        .expect("fixtures folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "only {} cases", cases.len());
    for case in cases {
        let golden_path = case.with_extension("golden.json");
        let golden: Value = serde_json::from_str(
            &fs::read_to_string(&golden_path)
                .expect("golden file; run scripts/code-hash-goldens.py"),
        )
        .expect("golden JSON");
        let name = case.display().to_string();
        let scanned = CodeFolder::scan(&case, Path::new(FIXTURES));
        if let Some(refused) = golden.get("refused") {
            let err = scanned.expect_err(&name);
            let expected = golden["sdk_exception"].as_str().expect("exception");
            match (expected, &err) {
                ("EmptyDirectoryError", CodeError::Empty(_))
                | ("GitWildMatchPatternError" | "error", CodeError::BadIgnorePattern { .. }) => {}
                _ => panic!("{name}: SDK refused with {refused}, we said {err}"),
            }
            continue;
        }
        let folder = scanned.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(folder.folder_name(), golden["folder_name"], "{name}");
        let files: Vec<Value> = folder
            .files()
            .iter()
            .map(|f| serde_json::json!({"path": f.relative, "size": f.size}))
            .collect();
        assert_eq!(Value::Array(files), golden["files"], "{name}");
        assert_eq!(folder.hash(), golden["hash"], "{name}");
        let blobs: Vec<String> = folder
            .upload_order()
            .into_iter()
            .map(|f| folder.blob_name(f))
            .collect();
        assert_eq!(serde_json::json!(blobs), golden["blob_names"], "{name}");
        assert_eq!(
            folder.blob_name(folder.indicator()),
            golden["indicator_blob"],
            "{name}"
        );
    }
}

#[test]
fn matcher_agrees_with_the_sdk_pathspec_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gitwildmatch-vectors.json"
    );
    let vectors: Value =
        serde_json::from_str(&fs::read_to_string(path).expect("vectors")).expect("JSON");
    let paths: Vec<&str> = vectors["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for case in vectors["patterns"].as_array().expect("patterns") {
        let pattern = case["pattern"].as_str().expect("pattern");
        let translated = translate(pattern);
        if case["error"].is_string() {
            let compiled = translated.and_then(|t| match t {
                Some((re, _)) => Regex::new(&re).map(|_| ()).map_err(|e| e.to_string()),
                None => Ok(()),
            });
            assert!(compiled.is_err(), "{pattern:?} should be refused");
            continue;
        }
        let translated = translated.unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
        let Some((regex, excludes)) = translated else {
            assert!(case["include"].is_null(), "{pattern:?} is not a no-op");
            continue;
        };
        assert_eq!(case["include"], excludes, "{pattern:?}");
        let regex = Regex::new(&regex).unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
        let expected: Vec<&str> = case["matches"]
            .as_array()
            .expect("matches")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let got: Vec<&str> = paths
            .iter()
            .copied()
            .filter(|p| regex.is_match(p))
            .collect();
        assert_eq!(got, expected, "{pattern:?} → {regex}");
    }
}

#[test]
fn patterns_follow_gitwildmatch_as_vendored_by_the_sdk() {
    assert_eq!(matches("*.log", "a/b/x.log"), Some(true));
    assert_eq!(matches("!keep.log", "keep.log"), Some(false));
    assert_eq!(matches("logs/", "logs/deep/x"), Some(true));
    assert_eq!(
        matches("logs/", "logs"),
        None,
        "a file named like the folder"
    );
    assert_eq!(matches("/build", "build/out"), Some(true));
    assert_eq!(matches("/build", "sub/build/out"), None);
    assert_eq!(
        matches("doc/*.txt", "x/doc/a.txt"),
        None,
        "anchored by the inner slash"
    );
    assert_eq!(matches("**/tmp/**", "a/tmp/b"), Some(true));
    assert_eq!(matches("a/**/b", "a/x/y/b"), Some(true));
    assert_eq!(matches("[abc].txt", "b.txt"), Some(true));
    assert_eq!(matches("[!abc].txt", "b.txt"), None);
    assert_eq!(matches("?.md", "xy.md"), None);
    assert_eq!(matches(r"\#literal", "#literal"), Some(true));
    assert_eq!(matches("  padded.txt \t", "padded.txt"), Some(true));
    assert_eq!(
        matches("[[]x", "[x"),
        Some(true),
        "`[` is literal in a class"
    );
    assert_eq!(
        matches("a[", "a["),
        Some(true),
        "unclosed bracket is literal"
    );
    assert_eq!(matches("*.txt", "a.txt\n"), Some(true), "Python's $");
    assert_eq!(translate("# comment"), Ok(None));
    assert_eq!(translate("   "), Ok(None));
    assert_eq!(translate("/"), Ok(None));
    assert!(translate("foo\\ ").is_err());
    assert!(translate("!").is_err());
    assert!(translate("[z-a]").is_err());
}

#[test]
fn ignore_file_lines_are_read_like_python_text() {
    let lines: Vec<&str> = python_lines("a\r\nb\rc\n\nd").collect();
    assert_eq!(lines, ["a", "b", "c", "", "d"]);
    assert_eq!(python_lines("a\n").collect::<Vec<_>>(), ["a"]);
    assert_eq!(python_lines("").count(), 0);
    assert!(python_space('\u{1f}') && python_space('\u{a0}') && !python_space('\u{feff}'));
}

#[test]
fn refuses_what_is_not_a_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    assert!(matches!(
        CodeFolder::scan(&missing, dir.path()),
        Err(CodeError::NotFound(_))
    ));
    let file = dir.path().join("file.py");
    fs::write(&file, "x").expect("write");
    assert!(matches!(
        CodeFolder::scan(&file, dir.path()),
        Err(CodeError::NotADirectory(_))
    ));
    let empty = dir.path().join("empty");
    fs::create_dir_all(empty.join("sub/deeper")).expect("mkdir");
    assert!(matches!(
        CodeFolder::scan(&empty, dir.path()),
        Err(CodeError::Empty(_))
    ));
}

#[test]
fn empty_folders_contribute_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("score.py"), "x = 1\n").expect("write");
    let before = CodeFolder::scan(dir.path(), dir.path()).expect("scan");
    fs::create_dir_all(dir.path().join("empty/nested")).expect("mkdir");
    let after = CodeFolder::scan(dir.path(), dir.path()).expect("scan");
    assert_eq!(before.hash(), after.hash());
    // sha256("1#score.py#6x = 1\n"), as the SDK computes it for this folder.
    assert_eq!(before.files().len(), 1);
}

#[cfg(unix)]
#[test]
fn symlink_loops_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("score.py"), "x").expect("write");
    fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::os::unix::fs::symlink("..", dir.path().join("sub/up")).expect("symlink");
    let err = CodeFolder::scan(dir.path(), dir.path()).expect_err("loop");
    assert!(matches!(err, CodeError::Unsupported { .. }), "{err}");
    // Two links to the same folder are not a loop: the SDK uploads it twice.
    fs::remove_file(dir.path().join("sub/up")).expect("rm");
    fs::write(dir.path().join("sub/m.py"), "m").expect("write");
    std::os::unix::fs::symlink("sub", dir.path().join("again")).expect("symlink");
    let folder = CodeFolder::scan(dir.path(), dir.path()).expect("scan");
    let names: Vec<&str> = folder.files().iter().map(|f| f.relative.as_str()).collect();
    assert_eq!(names, ["again/m.py", "score.py", "sub/m.py"]);
}

#[cfg(unix)]
#[test]
fn broken_symlinks_and_non_utf8_names() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("score.py"), "x").expect("write");
    std::os::unix::fs::symlink("nowhere", dir.path().join("dangling")).expect("symlink");
    assert!(matches!(
        CodeFolder::scan(dir.path(), dir.path()),
        Err(CodeError::Io { .. })
    ));
    fs::write(dir.path().join(".amlignore"), "dangling\n*.bin\n").expect("write");
    assert!(
        CodeFolder::scan(dir.path(), dir.path()).is_ok(),
        "an ignored broken link is fine"
    );
    let odd = dir.path().join(OsStr::from_bytes(b"odd\xff"));
    fs::write(&odd, "x").expect("write");
    assert!(matches!(
        CodeFolder::scan(dir.path(), dir.path()),
        Err(CodeError::Unsupported { .. })
    ));
    fs::rename(&odd, dir.path().join(OsStr::from_bytes(b"odd\xff.bin"))).expect("rename");
    assert!(
        CodeFolder::scan(dir.path(), dir.path()).is_ok(),
        "an ignored odd name is fine"
    );
}

#[cfg(unix)]
#[test]
fn nothing_outside_the_boundary_is_listed_or_read() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().expect("tempdir");
    let config = root.path().join("config");
    let code = config.join("src");
    fs::create_dir_all(&code).expect("mkdir");
    fs::create_dir_all(config.join("shared")).expect("mkdir");
    fs::write(code.join("score.py"), "x").expect("write");
    fs::write(config.join("shared/lib.py"), "y").expect("write");
    fs::write(root.path().join("secret.env"), "TOKEN=1").expect("write");
    // Inside the config folder, though outside the code folder: allowed.
    symlink("../shared/lib.py", code.join("lib.py")).expect("symlink");
    assert!(CodeFolder::scan(&code, &config).is_ok());
    let cases: [(&str, &Path); 4] = [
        ("env", Path::new("/proc/self/environ")),
        ("up.env", Path::new("../../secret.env")),
        ("rootdir", Path::new("/")),
        (".amlignore", Path::new("../../secret.env")),
    ];
    for (name, target) in cases {
        let link = code.join(name);
        symlink(target, &link).expect("symlink");
        let err = CodeFolder::list(&code, &config).expect_err(name);
        let CodeError::Outside { path, .. } = &err else {
            panic!("{name}: {err}");
        };
        assert!(path.ends_with(name), "{name}: {err}");
        assert!(
            err.to_string().contains("outside the config file's folder"),
            "{err}"
        );
        fs::remove_file(&link).expect("rm");
    }
    // An ignored link is neither read nor uploaded: it stays allowed (a virtualenv's
    // `bin/python` points outside, and `.gitignore` excludes it).
    symlink("/usr/bin/env", code.join("tool")).expect("symlink");
    fs::write(code.join(".amlignore"), "tool\n").expect("write");
    let folder = CodeFolder::list(&code, &config).expect("ignored");
    assert!(folder.files().iter().all(|f| f.relative != "tool"));
}

#[test]
fn listing_reads_no_content_and_the_hash_matches_a_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("score.py"), "x = 1\n").expect("write");
    fs::write(dir.path().join("b.txt"), "b").expect("write");
    let listed = CodeFolder::list(dir.path(), dir.path()).expect("list");
    assert_eq!(listed.hash(), "");
    let scanned = CodeFolder::scan(dir.path(), dir.path()).expect("scan");
    assert_eq!(scanned.hash().len(), 64);
    assert_eq!(scanned.upload_digest().len(), 64);
    assert_eq!(listed.fingerprint(), scanned.fingerprint());
    let chain = UploadChain::from_hex(scanned.upload_digest()).expect("hex");
    assert_eq!(chain.hex(), scanned.upload_digest());
    assert_eq!(UploadChain::from_hex("zz"), None);
}
