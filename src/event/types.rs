//! Newtypes for the identifiers an event carries. Private fields: the only way in is `parse`.

use std::fmt;

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// An event's `id`: Event Grid's deduplication key.
    EventId
);
string_newtype!(
    /// An event type such as `Microsoft.MachineLearningServices.ModelRegistered`.
    EventType
);
string_newtype!(
    /// A registered model's name.
    ModelName
);
string_newtype!(
    /// A model version. Azure ML versions are usually integers but may be free text.
    ModelVersion
);
string_newtype!(
    /// The event's `topic`/`source`: for Azure ML events, the workspace ARM resource id.
    WorkspaceId
);

fn no_control_chars(s: &str) -> Result<(), String> {
    if s.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(())
}

impl EventId {
    /// Any non-empty text of at most 256 characters.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("is empty".into());
        }
        if s.chars().count() > 256 {
            return Err("is longer than 256 characters".into());
        }
        no_control_chars(s)?;
        Ok(Self(s.to_string()))
    }
}

impl EventType {
    /// Any non-empty text without whitespace, at most 256 characters.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() || s.len() > 256 || s.chars().any(char::is_whitespace) {
            return Err(format!("{s:?} is not an event type"));
        }
        Ok(Self(s.to_string()))
    }
}

impl ModelName {
    /// Azure ML asset names: 1–255 characters, starting with a letter or digit, then letters, digits,
    /// `-`, `_` and `.`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        let mut chars = s.chars();
        match chars.next() {
            None => return Err("is empty".into()),
            Some(c) if !c.is_ascii_alphanumeric() => {
                return Err(format!("{s:?} must start with a letter or digit"));
            }
            Some(_) => {}
        }
        if s.len() > 255 {
            return Err("is longer than 255 characters".into());
        }
        if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c))) {
            return Err(format!(
                "{s:?} contains {bad:?}; model names allow letters, digits, '-', '_' and '.'"
            ));
        }
        Ok(Self(s.to_string()))
    }
}

impl ModelVersion {
    /// Non-empty, at most 64 characters: letters, digits, `.`, `_`, `-` and `+` (the version becomes
    /// part of blob names and deployment names, so nothing that a URL would reinterpret).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("is empty".into());
        }
        if s.len() > 64 {
            return Err("is longer than 64 characters".into());
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-+".contains(*c)))
        {
            return Err(format!("{s:?} contains {bad:?}"));
        }
        Ok(Self(s.to_string()))
    }
}

impl WorkspaceId {
    /// Any non-empty text; the comparison with the configured workspace is what matters.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("is empty".into());
        }
        no_control_chars(s)?;
        Ok(Self(s.to_string()))
    }

    /// ARM ids compare case-insensitively, and a trailing `/` does not matter.
    pub fn same_as(&self, other: &WorkspaceId) -> bool {
        self.0
            .trim_end_matches('/')
            .eq_ignore_ascii_case(other.0.trim_end_matches('/'))
    }

    /// Whether this looks like an Azure ML workspace ARM id.
    pub fn is_workspace_arm_id(&self) -> bool {
        let lower = self.0.to_ascii_lowercase();
        lower.starts_with("/subscriptions/")
            && lower.contains("/resourcegroups/")
            && lower.contains("/providers/microsoft.machinelearningservices/workspaces/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_with_slashes_or_colons_are_rejected() {
        assert!(ModelName::parse("a/b").is_err());
        assert!(ModelName::parse("a:b").is_err());
        assert!(ModelName::parse("").is_err());
        assert!(ModelName::parse("-x").is_err());
        assert!(ModelName::parse("credit_risk.v2-x").is_ok());
    }

    #[test]
    fn versions_with_separators_are_rejected() {
        assert!(ModelVersion::parse("1 2").is_err());
        assert!(ModelVersion::parse("1/2").is_err());
        assert!(ModelVersion::parse("a\\b").is_err());
        assert!(ModelVersion::parse("1%2F").is_err());
        assert!(ModelVersion::parse(" ").is_err());
        assert!(ModelVersion::parse("2024.10.1").is_ok());
    }

    #[test]
    fn workspaces_compare_case_insensitively() {
        let a = WorkspaceId::parse("/subscriptions/S/resourceGroups/RG/providers/Microsoft.MachineLearningServices/workspaces/WS").unwrap();
        let b = WorkspaceId::parse("/subscriptions/s/resourcegroups/rg/providers/microsoft.machinelearningservices/workspaces/ws/").unwrap();
        assert!(a.same_as(&b));
        assert!(a.is_workspace_arm_id());
    }
}
