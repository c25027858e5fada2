//! PyYAML-exact text for conda files.
//!
//! `az ml` (azure-ai-ml) does not upload an inline environment's conda file as
//! written: it runs `yaml.dump(yaml.safe_load(text), sort_keys=True)` on it and
//! hashes the result to name the environment version, so the text must match
//! PyYAML byte for byte. No maintained Rust crate emits PyYAML's style (block
//! sequences not indented under their key, its quoting choices, folding at 80
//! columns, `...` after a top-level plain scalar), and serde-based parsers drop
//! the scalar style that YAML 1.1 implicit resolution depends on, so this is a
//! small hand port: [`resolve`] loads like SafeLoader, [`emit`] dumps like the
//! default Dumper. Inputs that would make PyYAML write anchors or tags (aliases,
//! exotic tags) are refused rather than approximated.
//!
//! The vectors under `tests/fixtures/pyyaml` come from `scripts/pyyaml-vectors.py`.

mod emit;
mod resolve;

/// Returns exactly what `yaml.dump(yaml.safe_load(source), sort_keys=True)`
/// returns under PyYAML 6.0.x, or a message for the user when the file is not
/// valid YAML or uses something this port refuses (aliases, merge keys, tags
/// other than the core scalar ones, several documents).
pub fn conda_text(source: &str) -> Result<String, String> {
    resolve::load(source).map(|value| emit::dump(&value))
}

#[cfg(test)]
mod tests;
