//! `xivo-ha doctor`: the preflight of an HA pair. Each check looks at one condition XiVO's HA
//! needs, on the role this node has, and reports ok / warning / failed with what it found and
//! the fix. The command ([`command`]) exits 1 when any check failed, and leaves its report in
//! the state directory (`doctor.json`, [`Report::document`]) for `status` and the dashboard.

pub mod checks;
pub mod command;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::ha::{HaConfig, NodeType};
use crate::status::documents::DoctorDoc;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Failed,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// A short, stable name (`sip-expiry`, `slave-ssh`, ...).
    pub check: Cow<'static, str>,
    pub level: Level,
    /// What was found.
    pub found: String,
    /// What to do about it (absent when ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn new(check: &'static str, level: Level, found: String, fix: Option<String>) -> Finding {
        Finding {
            check: Cow::Borrowed(check),
            level,
            found,
            fix,
        }
    }

    pub fn ok(check: &'static str, found: impl Into<String>) -> Finding {
        Finding::new(check, Level::Ok, found.into(), None)
    }

    pub fn warning(
        check: &'static str,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::new(check, Level::Warning, found.into(), Some(fix.into()))
    }

    pub fn failed(
        check: &'static str,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::new(check, Level::Failed, found.into(), Some(fix.into()))
    }

    /// `failed   sip-expiry        maxexpiry is 3600 s: fix: xivo-ha configure ...`
    pub fn render(&self) -> String {
        let level = match self.level {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Failed => "failed",
        };
        match &self.fix {
            Some(fix) => format!("{level:<8} {:<20} {} — fix: {fix}", self.check, self.found),
            None => format!("{level:<8} {:<20} {}", self.check, self.found),
        }
    }
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub node_type: NodeType,
    pub remote_address: String,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Failed)
    }

    /// The report as its state document, run at `ran_at`.
    pub fn document(&self, ran_at: DateTime<Utc>) -> DoctorDoc {
        let count = |level| self.findings.iter().filter(|f| f.level == level).count();
        let (failed, warnings) = (count(Level::Failed), count(Level::Warning));
        let mut summary = format!(
            "{} checks at {}: ",
            self.findings.len(),
            ran_at.format("%Y-%m-%d %H:%M UTC")
        );
        summary.push_str(&match (failed, warnings) {
            (0, 0) => "all ok".to_owned(),
            (f, w) => format!("{f} failed, {w} warnings"),
        });
        let worst: Vec<&str> = self
            .findings
            .iter()
            .filter(|f| f.level == Level::Failed)
            .map(|f| f.check.as_ref())
            .collect();
        if !worst.is_empty() {
            summary.push_str(&format!(" ({})", worst.join(", ")));
        }
        DoctorDoc {
            summary,
            ran_at,
            node_type: self.node_type,
            findings: self.findings.clone(),
        }
    }
}

/// Runs every check that applies to this node's role.
pub async fn run(ctx: &Context) -> Report {
    let ha = match HaConfig::load(&ctx.paths) {
        Ok(ha) => ha,
        Err(e) => {
            return Report {
                node_type: NodeType::Disabled,
                remote_address: String::new(),
                findings: vec![Finding::failed(
                    "ha-conf",
                    e.to_string(),
                    "fix ha.conf or set it again with xivo-ha configure",
                )],
            };
        }
    };
    let findings = checks::all(ctx, &ha).await;
    Report {
        node_type: ha.node_type,
        remote_address: ha.remote_address,
        findings,
    }
}
