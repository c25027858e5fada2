//! `{placeholder}` templates used in rule actions (`event_type`, `ref`, `inputs`, ...).
//!
//! Parsed once when the config loads, so an unknown placeholder is a `check-config` error rather than
//! a surprise at deploy time. `{{` and `}}` stand for literal braces.

use std::fmt;

/// The placeholders every template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "modelName",
    "modelVersion",
    "modelId",
    "eventId",
    "workspace",
];

/// One placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{modelName}`
    ModelName,
    /// `{modelVersion}`
    ModelVersion,
    /// `{modelId}`: `azureml:{name}:{version}`
    ModelId,
    /// `{eventId}`
    EventId,
    /// `{workspace}`: the event's workspace ARM id
    Workspace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Placeholder(Placeholder),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

/// The values placeholders are replaced with.
#[derive(Debug, Clone)]
pub struct TemplateValues<'a> {
    /// `{modelName}`
    pub model_name: &'a str,
    /// `{modelVersion}`
    pub model_version: &'a str,
    /// `{modelId}`
    pub model_id: &'a str,
    /// `{eventId}`
    pub event_id: &'a str,
    /// `{workspace}`
    pub workspace: &'a str,
}

impl Template {
    /// Parses `source`, or returns every problem in it.
    pub fn parse(source: &str) -> Result<Template, Vec<String>> {
        let mut segments = Vec::new();
        let mut problems = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &source[i + 1..];
                    let Some(end) = rest.find('}') else {
                        problems.push(format!(
                            "unclosed '{{' in {source:?} (write '{{{{' for a literal brace)"
                        ));
                        break;
                    };
                    let name = &rest[..end];
                    match placeholder(name) {
                        Some(p) => {
                            if !literal.is_empty() {
                                segments.push(Segment::Literal(std::mem::take(&mut literal)));
                            }
                            segments.push(Segment::Placeholder(p));
                        }
                        None => problems.push(format!(
                            "unknown placeholder {{{name}}}; known: {}",
                            PLACEHOLDERS
                                .iter()
                                .map(|p| format!("{{{p}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    }
                    // Skip the placeholder's characters and the closing brace.
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                '}' => problems.push(format!(
                    "unmatched '}}' in {source:?} (write '}}}}' for a literal brace)"
                )),
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        if problems.is_empty() {
            Ok(Template {
                source: source.to_string(),
                segments,
            })
        } else {
            Err(problems)
        }
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The least and the most characters this template can render, given each placeholder's
    /// (`None`: no known upper bound).
    pub fn length_bounds(
        &self,
        placeholder: impl Fn(Placeholder) -> (usize, Option<usize>),
    ) -> (usize, Option<usize>) {
        let (mut least, mut most) = (0, Some(0));
        for segment in &self.segments {
            let (lo, hi) = match segment {
                Segment::Literal(text) => (text.chars().count(), Some(text.chars().count())),
                Segment::Placeholder(p) => placeholder(*p),
            };
            least += lo;
            most = most.zip(hi).map(|(a, b)| a + b);
        }
        (least, most)
    }

    /// Replaces the placeholders.
    pub fn render(&self, values: &TemplateValues<'_>) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Placeholder(p) => out.push_str(match p {
                    Placeholder::ModelName => values.model_name,
                    Placeholder::ModelVersion => values.model_version,
                    Placeholder::ModelId => values.model_id,
                    Placeholder::EventId => values.event_id,
                    Placeholder::Workspace => values.workspace,
                }),
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn placeholder(name: &str) -> Option<Placeholder> {
    Some(match name {
        "modelName" => Placeholder::ModelName,
        "modelVersion" => Placeholder::ModelVersion,
        "modelId" => Placeholder::ModelId,
        "eventId" => Placeholder::EventId,
        "workspace" => Placeholder::Workspace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: TemplateValues<'static> = TemplateValues {
        model_name: "fraud",
        model_version: "7",
        model_id: "azureml:fraud:7",
        event_id: "e-1",
        workspace: "/subscriptions/s/ws",
    };

    #[test]
    fn placeholders_are_replaced() {
        let t = Template::parse(
            "deploy {modelName}@{modelVersion} ({modelId}, {eventId}, {workspace})",
        )
        .unwrap();
        assert_eq!(
            t.render(&VALUES),
            "deploy fraud@7 (azureml:fraud:7, e-1, /subscriptions/s/ws)"
        );
    }

    #[test]
    fn doubled_braces_are_literal() {
        let t = Template::parse("{{x}} {modelName}").unwrap();
        assert_eq!(t.render(&VALUES), "{x} fraud");
    }

    #[test]
    fn unknown_placeholders_are_rejected_with_the_known_list() {
        let err = Template::parse("{model} and {version}").unwrap_err();
        assert_eq!(err.len(), 2);
        assert!(
            err[0].contains("{model}") && err[0].contains("{modelName}"),
            "{err:?}"
        );
    }

    #[test]
    fn unbalanced_braces_are_rejected() {
        assert!(Template::parse("{modelName").is_err());
        assert!(Template::parse("x}").is_err());
    }
}
