//! `custom.env` files: `KEY=value` lines (XiVO CC's /etc/docker/xivo/custom.env, the file
//! docker compose passes as `env_file`), merged with the process environment, which wins, and
//! deserialised with envy into each component's typed settings. Errors name the variable and,
//! when it came from the file, the file and line. The names, defaults and help are declared in
//! [`super::catalog`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// What a component's settings reader refuses: the file or a variable as [`ConfigError`] says,
/// or a value that reads but is not usable (`variable` names it, `reason` says why).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{variable}: {reason}")]
    Invalid { variable: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}:{line}: {reason}: write `NAME=value` (a `#` starts a comment)", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{variable}{origin}: {reason}")]
    Variable {
        variable: String,
        /// `" (custom.env line 3)"` or empty when it came from the environment.
        origin: String,
        reason: String,
    },
}

/// One `KEY=value` entry and the line it stands on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvEntry {
    pub value: String,
    pub line: usize,
}

/// A name given a second time in a file: the later line applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    pub name: String,
    /// The line that no longer applies (the previous occurrence).
    pub first_line: usize,
    /// The line that applies.
    pub line: usize,
}

/// A parsed `KEY=value` file. Later entries override earlier ones, as with docker compose.
#[derive(Clone, Debug, Default)]
pub struct EnvFile {
    pub path: PathBuf,
    pub entries: BTreeMap<String, EnvEntry>,
    /// Names given more than once, in file order.
    pub duplicates: Vec<Duplicate>,
}

impl EnvFile {
    /// `text` as the site file `/x/custom.env` (unit tests of the settings readers).
    #[cfg(test)]
    pub(crate) fn for_test(text: &str) -> EnvFile {
        EnvFile::parse(Path::new("/x/custom.env"), text).expect("a well-formed test file")
    }

    /// Reads and parses `path`; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<EnvFile, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => EnvFile::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(EnvFile {
                path: path.to_owned(),
                ..EnvFile::default()
            }),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses docker compose's env-file syntax: `KEY=value`, optional `export `, blank lines and
    /// `#` comments, values optionally in single or double quotes.
    pub fn parse(path: &Path, text: &str) -> Result<EnvFile, ConfigError> {
        let mut entries = BTreeMap::new();
        let mut duplicates = Vec::new();
        // Windows editors start a UTF-8 file with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let syntax = |reason: String| ConfigError::Syntax {
                path: path.to_owned(),
                line,
                reason,
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let trimmed = trimmed.strip_prefix("export ").unwrap_or(trimmed);
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(syntax(format!("`{trimmed}` has no `=`")));
            };
            let key = key.trim();
            let valid_key = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_key {
                return Err(syntax(format!("`{key}` is not a variable name")));
            }
            let value = unquote(value.trim()).map_err(syntax)?;
            if let Some(previous) = entries.insert(key.to_owned(), EnvEntry { value, line }) {
                duplicates.push(Duplicate {
                    name: key.to_owned(),
                    first_line: previous.line,
                    line,
                });
            }
        }
        Ok(EnvFile {
            path: path.to_owned(),
            entries,
            duplicates,
        })
    }

    /// An error about `variable`'s value that the typed settings found after deserialising
    /// (e.g. a URL that does not parse), naming the file line as envy's own errors do.
    pub fn variable_error(&self, variable: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Variable {
            variable: variable.to_owned(),
            origin: self.origin_of(variable),
            reason: reason.into(),
        }
    }

    fn origin_of(&self, variable: &str) -> String {
        match self.entries.get(variable) {
            Some(entry) if std::env::var_os(variable).is_none() => {
                format!(" ({} line {})", self.path.display(), entry.line)
            }
            _ => String::new(),
        }
    }
}

fn unquote(value: &str) -> Result<String, String> {
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote) {
            // The closing quote ends the line or comes before an inline comment.
            let closing = rest.match_indices(quote).find(|(at, _)| {
                let after = rest[at + 1..].trim_start();
                after.is_empty() || after.starts_with('#')
            });
            return match closing {
                Some((at, _)) => Ok(rest[..at].to_owned()),
                None if rest.contains(quote) => Err(format!(
                    "the value {value} has text after its closing {quote}"
                )),
                None => Err(format!("the value {value} has no closing {quote}")),
            };
        }
    }
    // An unquoted value ends at ` #` (an inline comment).
    Ok(match value.find(" #") {
        Some(at) => value[..at].trim_end().to_owned(),
        None => value.to_owned(),
    })
}

/// One line per setting whose value is not its default, for the help texts: each of `shown`
/// is (what it is, its variable after `prefix`, its value, its default), and gives e.g.
/// `port 5433 (XIVO_HA_SLAVE_DB_PORT)`.
pub fn differing(prefix: &str, shown: Vec<(&str, &str, String, String)>) -> Vec<String> {
    shown
        .into_iter()
        .filter(|(_, _, value, default)| value != default)
        .map(|(what, variable, value, _)| format!("{what} {value} ({prefix}{variable})"))
        .collect()
}

/// Deserialises `T` from the variables named `<prefix><FIELD>`: those of `file`, overridden by
/// the process environment. Field names map to variables in upper case (`poll_ms` with prefix
/// `XIVO_HA_` reads `XIVO_HA_POLL_MS`). Use `#[serde(default)]` for optional settings.
pub fn from_env<T: DeserializeOwned>(prefix: &str, file: &EnvFile) -> Result<T, ConfigError> {
    let mut merged: BTreeMap<String, String> = file
        .entries
        .iter()
        .map(|(k, e)| (k.clone(), e.value.clone()))
        .collect();
    merged.extend(std::env::vars());
    // envy reads a boolean only from `true` or `false`. Where it refuses a value as a boolean,
    // the value is read with [`boolean`] and the settings read again: one variable per pass.
    loop {
        let error = match envy::prefixed(prefix).from_iter::<_, T>(merged.clone()) {
            Ok(settings) => return Ok(settings),
            Err(error) => error,
        };
        let retry = match &error {
            envy::Error::Custom(message) => refused_boolean(message)
                .map(|name| format!("{prefix}{name}"))
                .and_then(|variable| {
                    let value = boolean(merged.get(&variable)?)?;
                    Some((variable, value))
                }),
            envy::Error::MissingValue(_) => None,
        };
        match retry {
            Some((variable, value)) if merged[&variable] != value.to_string() => {
                merged.insert(variable, value.to_string());
            }
            _ => return Err(describe_envy_error(prefix, file, error)),
        }
    }
}

/// A boolean setting's value: true/false, yes/no, on/off or 1/0, in any case.
pub fn boolean(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// The variable (without its prefix) whose value envy refused as a boolean, from its message
/// (`provided string was not `true` or `false` while parsing value 'X' provided by NAME`).
fn refused_boolean(message: &str) -> Option<&str> {
    if !message.starts_with(&"x".parse::<bool>().unwrap_err().to_string()) {
        return None;
    }
    message
        .rsplit_once(" provided by ")
        .map(|(_, name)| name.trim())
}

fn describe_envy_error(prefix: &str, file: &EnvFile, error: envy::Error) -> ConfigError {
    match error {
        envy::Error::MissingValue(field) => {
            let variable = format!("{prefix}{}", field.to_uppercase());
            ConfigError::Variable {
                origin: String::new(),
                reason: format!("not set: add `{variable}=...` to {}", file.path.display()),
                variable,
            }
        }
        envy::Error::Custom(message) => {
            // envy says "... provided by NAME" for values that do not parse.
            let (reason, variable) = match message.rsplit_once(" provided by ") {
                Some((reason, name)) if name.trim().starts_with(prefix) => {
                    (reason.to_owned(), name.trim().to_owned())
                }
                Some((reason, name)) => (reason.to_owned(), format!("{prefix}{}", name.trim())),
                None => (message.clone(), prefix.trim_end_matches('_').to_owned()),
            };
            ConfigError::Variable {
                origin: file.origin_of(&variable),
                reason,
                variable,
            }
        }
    }
}

/// The one-line error a settings reader gives for a refused test file (the readers' unit
/// tests).
#[cfg(test)]
pub(crate) fn refusal<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) -> String {
    result.unwrap_err().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Sample {
        host: String,
        #[serde(default)]
        enabled: bool,
        port: Option<u16>,
    }

    fn file(text: &str) -> EnvFile {
        EnvFile::parse(Path::new("/etc/docker/xivo/custom.env"), text).unwrap()
    }

    #[test]
    fn parses_compose_env_syntax() {
        let env = file(
            "# comment\n\nexport XT_HOST=db.example\nXT_ENABLED='true'\nXT_PORT=5433 # inline\n",
        );
        let sample: Sample = from_env("XT_", &env).unwrap();
        assert_eq!(sample.host, "db.example");
        assert!(sample.enabled);
        assert_eq!(sample.port, Some(5433));
        assert_eq!(env.entries["XT_PORT"].line, 5);
        assert!(env.duplicates.is_empty());
    }

    #[test]
    fn a_name_given_twice_is_recorded_with_both_lines() {
        let env = file("XT_HOST=a\n# c\nXT_HOST=b\nXT_PORT=1\n");
        assert_eq!(env.entries["XT_HOST"].value, "b");
        assert_eq!(
            env.duplicates,
            vec![Duplicate {
                name: "XT_HOST".into(),
                first_line: 1,
                line: 3
            }]
        );
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let error = EnvFile::parse(Path::new("/x/custom.env"), "A=1\nnot a line\n").unwrap_err();
        assert!(error.to_string().starts_with("/x/custom.env:2:"), "{error}");
        let error = EnvFile::parse(Path::new("/x/custom.env"), "A=\"open\n").unwrap_err();
        assert!(error.to_string().contains("closing"), "{error}");
    }

    #[test]
    fn a_byte_order_mark_and_an_inline_comment_after_quotes_are_fine() {
        let env =
            file("\u{feff}XT_HOST='db.example' # the reporting host\nXT_PORT=\"5433\"#port\n");
        let sample: Sample = from_env("XT_", &env).unwrap();
        assert_eq!(sample.host, "db.example");
        assert_eq!(sample.port, Some(5433));
        let error = EnvFile::parse(Path::new("/x/custom.env"), "A='a' b\n").unwrap_err();
        assert!(
            error.to_string().contains("text after its closing"),
            "{error}"
        );
    }

    #[test]
    fn booleans_take_any_case_and_yes_no_on_off_1_0() {
        for (text, expected) in [
            ("TRUE", true),
            ("True", true),
            ("yes", true),
            ("On", true),
            ("1", true),
            ("FALSE", false),
            ("No", false),
            ("off", false),
            ("0", false),
        ] {
            let env = file(&format!("XW_HOST=h\nXW_ENABLED={text}\n"));
            let sample: Sample = from_env("XW_", &env).unwrap();
            assert_eq!(sample.enabled, expected, "{text}");
        }
    }

    #[test]
    fn bad_values_name_the_variable_and_line() {
        let env = file("XU_HOST=h\nXU_ENABLED=yes-please\n");
        let error = from_env::<Sample>("XU_", &env).unwrap_err().to_string();
        assert!(
            error.starts_with("XU_ENABLED (/etc/docker/xivo/custom.env line 2)"),
            "{error}"
        );
    }

    #[test]
    fn missing_values_name_the_variable() {
        let error = from_env::<Sample>("XV_", &file(""))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("XV_HOST: not set"), "{error}");
    }
}
