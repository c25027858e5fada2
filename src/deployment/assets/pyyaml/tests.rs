use super::conda_text;
use super::emit::float_repr;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pyyaml");

#[test]
fn matches_every_pyyaml_vector() {
    let mut entries: Vec<_> = std::fs::read_dir(VECTORS)
        .expect("vector directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    entries.sort();
    assert!(entries.len() >= 40, "only {} vectors", entries.len());
    let mut failures = Vec::new();
    for input in &entries {
        let source = std::fs::read_to_string(input).expect("input");
        let expected = std::fs::read_to_string(input.with_extension("dump")).expect("dump");
        match conda_text(&source) {
            Ok(actual) if actual == expected => {}
            Ok(actual) => failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                input.display()
            )),
            Err(e) => failures.push(format!("{}: error {e}", input.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn typical_conda_file() {
    let source = "name: env\nchannels: [conda-forge]\ndependencies:\n  - python=3.10\n  - pip:\n    - numpy>=1.21,<2\n";
    let expected = "channels:\n- conda-forge\ndependencies:\n- python=3.10\n- pip:\n  - numpy>=1.21,<2\nname: env\n";
    assert_eq!(conda_text(source).as_deref(), Ok(expected));
}

#[test]
fn scalars_table() {
    let cases = [
        ("3.10", "3.1\n...\n"),
        ("'3.10'", "'3.10'\n"),
        ("yes", "true\n...\n"),
        ("'yes'", "'yes'\n"),
        ("012", "10\n...\n"),
        ("1:20", "80\n...\n"),
        ("''", "''\n"),
        ("~", "null\n...\n"),
        ("1e17", "1e17\n...\n"),
        ("1.0e+17", "1.0e+17\n...\n"),
        ("'a b '", "'a b '\n"),
        ("\"caf\\u00e9\"", "\"caf\\xE9\"\n"),
        ("- 'x'", "- x\n"),
        ("{}", "{}\n"),
        ("\u{FEFF}a: 1", "a: 1\n"),
        ("- \"\\ttab\"", "- \"\\ttab\"\n"),
    ];
    for (source, expected) in cases {
        assert_eq!(conda_text(source).as_deref(), Ok(expected), "{source:?}");
    }
}

#[test]
fn float_repr_matches_python() {
    let cases = [
        (1e16, "1.0e+16"),
        (1.5e16, "1.5e+16"),
        (1234567890123456.0, "1234567890123456.0"),
        (0.0001, "0.0001"),
        (0.00001, "1.0e-05"),
        (-0.0, "-0.0"),
        (0.1, "0.1"),
        (f64::INFINITY, ".inf"),
        (f64::NEG_INFINITY, "-.inf"),
        (f64::NAN, ".nan"),
        (123.456, "123.456"),
        (6.02e23, "6.02e+23"),
    ];
    for (value, expected) in cases {
        assert_eq!(float_repr(value), expected, "{value:?}");
    }
}

#[test]
fn refusals() {
    let cases = [
        (
            "a: &x [1]\nb: *x\n",
            "anchors and aliases are not supported",
        ),
        ("a: 1\n---\nb: 2\n", "more than one YAML document"),
        ("<<: {a: 1}\n", "merge keys"),
        ("a: !!binary aGk=\n", "not supported"),
        ("a: !custom x\n", "not supported"),
        ("a: !!int abc\n", "not a valid !!int"),
        ("a: 2023-02-30\n", "not a valid date"),
        ("? [a]\n: b\n", "unhashable key"),
        ("- =\n", "'='"),
        ("a: [1\n", "not valid YAML"),
        ("a: 0x_\n", "invalid"),
        ("a:\tb\n", "tab character"),
        ("a: \u{1}\n", "unacceptable character #x0001"),
        ("a: b\u{2028}c\n", "U+2028"),
        (": x\n", "no key"),
    ];
    for (source, needle) in cases {
        let err = conda_text(source).expect_err(source);
        assert!(err.contains(needle), "{source:?}: {err}");
    }
}

#[test]
fn deep_nesting_is_refused_not_a_crash() {
    let source = format!("{}{}", "[".repeat(500), "]".repeat(500));
    assert!(conda_text(&source).is_err());
}

mod fuzz {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_yaml_like_text_never_panics(
            source in "[-a-z0-9 :#'\"\\[\\]{},&*!|>?%@`.~\\n\\t_+\\\\é]{0,60}"
        ) {
            let _ = super::conda_text(&source);
        }

        #[test]
        fn any_text_never_panics(source in "\\PC{0,40}") {
            let _ = super::conda_text(&source);
        }
    }
}
