//! The names users give (models, aliases) become folder names, URL parts and
//! SQL keys: checked in one place, with messages naming the rule.

use crate::RegistryError;

/// Checks a model name given on the command line: it becomes a folder name
/// and part of URLs, so it is one plain path component.
pub fn check_model_name(name: &str) -> Result<(), RegistryError> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.starts_with('.') {
        Some("starts with '.' (such folders are skipped by the server)")
    } else if name.contains(['/', '\\', ' ', '\0']) {
        Some("contains '/', '\\', a space or NUL")
    } else {
        None
    };
    match problem {
        Some(p) => Err(RegistryError::Invalid {
            what: format!("model name {name:?}"),
            problem: p.to_string(),
        }),
        None => Ok(()),
    }
}

/// Alias names are `[a-z0-9_-]+`.
pub fn check_alias_name(alias: &str) -> Result<(), RegistryError> {
    if !alias.is_empty()
        && alias
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(RegistryError::Invalid {
            what: format!("alias name {alias:?}"),
            problem: "must be one or more of a-z, 0-9, '_' and '-'".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_one_plain_path_component() {
        for ok in ["mlp", "resnet-50", "a.b_c", "7"] {
            check_model_name(ok).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "a\\b"] {
            assert!(check_model_name(bad).is_err(), "{bad:?}");
        }
    }
}
