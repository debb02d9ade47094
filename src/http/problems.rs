//! The dashboard's problem sections: what the alerts see failing and the mails they sent
//! recently ([`AlertsDoc`]), and the failing checks of the last `xivo-ha doctor`
//! ([`DoctorDoc`], as current as the doctor's last run, which the page says).
//!
//! Hooks: `#alerts tr.failing`, `#mails tr.mail.sent|not-sent`, `#doctor tr.finding.failed|warning`,
//! `#doctor-run[data-age-s]`.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::dashboard::{esc, when};
use crate::doctor::Level;
use crate::status::documents::{AlertsDoc, DoctorDoc};

/// A doctor's report older than this is said to be old.
pub const DOCTOR_OLD_AFTER_S: i64 = 24 * 3600;

pub fn alerts_section(out: &mut String, doc: Option<&AlertsDoc>, now: DateTime<Utc>) {
    out.push_str("<h2>Alerts</h2>");
    let Some(doc) = doc else {
        out.push_str("<p class=\"muted\">no alert raised on this node yet</p>");
        return;
    };
    let failing: Vec<_> = doc
        .entries
        .iter()
        .filter_map(|(key, e)| Some((key, e, e.failing_since?)))
        .collect();
    if failing.is_empty() {
        out.push_str("<p class=\"ok\" id=\"alerts\">nothing failing</p>");
    } else {
        out.push_str(
            "<table id=\"alerts\"><tr><th>failing</th><th>since</th><th>reason</th><th>mail</th></tr>",
        );
        for (key, e, since) in failing {
            // The alerts decide a mail, then send it: what went out is in `recent`.
            let sent = |at| {
                doc.recent
                    .iter()
                    .find(|m| m.at >= at && m.subject.contains(e.kind.failing_subject()))
            };
            let mail = match e.last_mail_at {
                Some(at) => match sent(at) {
                    Some(m) if m.error.is_none() => format!("mailed {}", when(m.at, now)),
                    Some(m) => format!(
                        "<span class=\"failed\">mail NOT SENT</span> {}",
                        when(m.at, now)
                    ),
                    None => format!("due {}, no mail went out (see below)", when(at, now)),
                },
                None if !e.kind.grace().is_zero() => format!(
                    "not yet (mailed after {} min)",
                    e.kind.grace().as_secs() / 60
                ),
                None => "not mailed".to_owned(),
            };
            let held = if e.held_back > 0 {
                format!("; {} reports held back (one mail an hour)", e.held_back)
            } else {
                String::new()
            };
            let _ = write!(
                out,
                "<tr class=\"failing\" data-kind=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{mail}{held}</td></tr>",
                e.kind.name(),
                esc(key),
                when(since, now),
                esc(&e.reason),
            );
        }
        out.push_str("</table>");
    }
    if doc.recent.is_empty() {
        out.push_str("<p class=\"muted\">no mail sent yet</p>");
    } else {
        out.push_str(
            "<table id=\"mails\"><tr><th>mailed</th><th>subject</th><th>outcome</th></tr>",
        );
        for mail in doc.recent.iter().rev() {
            let (class, outcome) = match &mail.error {
                None => ("sent", "sent".to_owned()),
                Some(e) => (
                    "not-sent",
                    format!("<span class=\"failed\">NOT SENT: {}</span>", esc(e)),
                ),
            };
            let _ = write!(
                out,
                "<tr class=\"mail {class}\"><td>{}</td><td>{}</td><td>{outcome}</td></tr>",
                when(mail.at, now),
                esc(&mail.subject),
            );
        }
        out.push_str("</table>");
    }
    let _ = write!(out, "<p class=\"muted\">{}</p>", esc(&doc.summary));
}

pub fn doctor_section(out: &mut String, doc: Option<&DoctorDoc>, now: DateTime<Utc>) {
    out.push_str("<h2>Doctor</h2>");
    let Some(doc) = doc else {
        out.push_str(
            "<p class=\"muted\" id=\"doctor-run\">the doctor has not run on this node: \
<code>xivo-ha doctor</code> checks the pair and its report shows here</p>",
        );
        return;
    };
    let age = (now - doc.ran_at).num_seconds();
    let old = if age > DOCTOR_OLD_AFTER_S {
        " <span class=\"failed\">(old: run <code>xivo-ha doctor</code> again)</span>"
    } else {
        ""
    };
    let wrong: Vec<_> = doc
        .findings
        .iter()
        .filter(|f| f.level != Level::Ok)
        .collect();
    let _ = write!(
        out,
        "<p class=\"muted\" id=\"doctor-run\" data-age-s=\"{age}\">the last <code>xivo-ha doctor</code> \
ran {} as {}: {} check{}, {} not ok{old}</p>",
        when(doc.ran_at, now),
        doc.node_type,
        doc.findings.len(),
        if doc.findings.len() == 1 { "" } else { "s" },
        wrong.len(),
    );
    if wrong.is_empty() {
        return;
    }
    out.push_str("<table id=\"doctor\"><tr><th>check</th><th>found</th><th>fix</th></tr>");
    // Failed first, then warnings, each in the doctor's order.
    for level in [Level::Failed, Level::Warning] {
        for f in wrong.iter().filter(|f| f.level == level) {
            let name = match level {
                Level::Failed => "failed",
                _ => "warning",
            };
            let _ = write!(
                out,
                "<tr class=\"finding {name}\"><td><span class=\"{name}\">{name}</span> {}</td><td>{}</td><td>{}</td></tr>",
                esc(&f.check),
                esc(&f.found),
                esc(f.fix.as_deref().unwrap_or("")),
            );
        }
    }
    out.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Kind;
    use crate::doctor::Finding;
    use crate::ha::NodeType;
    use crate::status::documents::{AlertEntry, MailRecord};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn failing_alerts_and_recent_mails_newest_first() {
        let now = at("2026-11-25T10:10:00Z");
        let mut out = String::new();
        alerts_section(&mut out, None, now);
        assert!(out.contains("no alert raised"));
        let doc = AlertsDoc {
            summary: "mail to root via <smtp>".into(),
            entries: [
                (
                    "replication".to_owned(),
                    AlertEntry {
                        kind: Kind::Replication,
                        failing_since: Some(at("2026-11-25T10:00:00Z")),
                        reason: "connection <refused>".into(),
                        mailed: true,
                        last_mail_at: Some(at("2026-11-25T10:00:01Z")),
                        held_back: 3,
                    },
                ),
                (
                    "failover".to_owned(),
                    AlertEntry {
                        kind: Kind::Failover,
                        failing_since: None,
                        reason: "recovered".into(),
                        mailed: true,
                        last_mail_at: Some(at("2026-11-25T09:00:00Z")),
                        held_back: 0,
                    },
                ),
            ]
            .into(),
            recent: vec![
                MailRecord {
                    at: at("2026-11-25T09:00:00Z"),
                    subject: "Failover".into(),
                    error: None,
                },
                MailRecord {
                    at: at("2026-11-25T10:00:01Z"),
                    subject: "[xivo-ha xivo-b] Slave replication failed".into(),
                    error: Some("550 <no>".into()),
                },
            ],
            ..AlertsDoc::default()
        };
        let mut out = String::new();
        alerts_section(&mut out, Some(&doc), now);
        assert_eq!(out.matches("<tr class=\"failing\"").count(), 1, "{out}");
        assert!(out.contains("connection &lt;refused&gt;"), "{out}");
        assert!(out.contains("3 reports held back"), "{out}");
        assert!(
            out.contains("mail NOT SENT</span> 2026-11-25 10:00:01"),
            "{out}"
        );
        let failed = out.find("NOT SENT: 550 &lt;no&gt;").unwrap();
        let sent = out.find("<tr class=\"mail sent\"").unwrap();
        assert!(failed < sent, "newest first: {out}");
        assert!(out.contains("mail to root via &lt;smtp&gt;"));
    }

    #[test]
    fn the_doctors_failing_checks_with_its_age() {
        let now = at("2026-11-25T10:10:00Z");
        let mut out = String::new();
        doctor_section(&mut out, None, now);
        assert!(out.contains("has not run"));
        let mut doc = DoctorDoc {
            summary: String::new(),
            ran_at: at("2026-11-25T10:00:00Z"),
            node_type: NodeType::Slave,
            findings: vec![
                Finding::ok("ha-configured", "slave"),
                Finding::warning("witnesses", "no <gateway>", "set XIVO_HA_MONITOR_WITNESSES"),
                Finding::failed("master-answers", "no answer", "start the master"),
            ],
        };
        let mut out = String::new();
        doctor_section(&mut out, Some(&doc), now);
        assert!(out.contains("data-age-s=\"600\""), "{out}");
        assert!(out.contains("3 checks, 2 not ok"), "{out}");
        let failed = out.find("<tr class=\"finding failed\"").unwrap();
        let warning = out.find("<tr class=\"finding warning\"").unwrap();
        assert!(failed < warning, "failed first: {out}");
        assert!(out.contains("no &lt;gateway&gt;"));
        assert!(!out.contains("ha-configured"), "only what is not ok: {out}");
        assert!(!out.contains("old: run"));
        doc.ran_at = at("2026-11-23T10:00:00Z");
        doc.findings.truncate(1);
        let mut out = String::new();
        doctor_section(&mut out, Some(&doc), now);
        assert!(out.contains("1 check, 0 not ok"), "{out}");
        assert!(out.contains("old: run"), "{out}");
        assert!(!out.contains("<table"));
    }
}
