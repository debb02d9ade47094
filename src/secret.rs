//! [`Secret`]: a password, or a connection URL that may hold one. Its `Debug` and `Display`
//! print `***`, it has no `Serialize`, and the value is read only through [`Secret::expose`],
//! so that a secret never reaches a log line, an error message or a state file by accident.
//! [`Secret::masked_url`] is the one place that shows a URL with its credentials hidden.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// What is printed instead of a secret.
const MASK: &str = "***";

/// A password or a URL with a password in it.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the driver that needs it (never for a message).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// For a secret that is a URL: the URL with its credentials (`user:password@`, with or
    /// without a scheme before them) replaced by `***`, for an error message about the URL. A value without credentials is shown
    /// as it is: only call this on a URL setting, never on a password.
    pub fn masked_url(&self) -> String {
        let url = &self.0;
        // Without a scheme (`user:pass@host:9200`), everything before the `@` is credentials.
        let start = url.find("://").map_or(0, |scheme_end| scheme_end + 3);
        match url.rfind('@') {
            Some(at) if at >= start => format!("{}{MASK}@{}", &url[..start], &url[at + 1..]),
            _ => url.clone(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// For command-line arguments (clap) that hold a URL with a password.
impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(value: &str) -> Result<Secret, Infallible> {
        Ok(Secret::new(value))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("postgresql://u:s3cret@host/db");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
        assert_eq!(secret.expose(), "postgresql://u:s3cret@host/db");
    }

    #[test]
    fn a_masked_url_keeps_the_scheme_and_the_host_only() {
        let masked = |url: &str| Secret::new(url).masked_url();
        assert_eq!(
            masked("http://elastic:s3cret@es:9200/"),
            "http://***@es:9200/"
        );
        assert_eq!(masked("http://a@b:s3c@ret@es:9200"), "http://***@es:9200");
        assert_eq!(masked("http://es:9200"), "http://es:9200");
        assert_eq!(masked("elastic:s3cret@es:9200"), "***@es:9200");
        assert_eq!(masked("not a url"), "not a url");
    }
}
