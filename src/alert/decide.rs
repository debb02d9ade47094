//! The pure part of the alerts: an [`Event`] seen against the alerts' document
//! ([`AlertsDoc`], what is failing and what was mailed) at a given time gives a mail or none.
//! No I/O and no clock of its own: the caller passes `now`, so that tests step through hours.
//!
//! The rules: a new failure is mailed (after its kind's grace, e.g. 5 minutes for a DB Replic
//! sink); a failure that persists is mailed again at most once an hour; its recovery is mailed
//! once, when its failure was; a one-off event is mailed, at most once an hour per key.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Change, Event, Kind};
use crate::status::documents::{AlertEntry, AlertsDoc};

/// A failure that persists is mailed again after this long, not before.
pub const REPEAT_AFTER: Duration = Duration::from_secs(3600);

/// A mail to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    /// The alert's key (`replication`, `dbreplic-sink:cel → elasticsearch`).
    pub key: String,
    pub subject: String,
    pub body: String,
}

/// The key of `event`'s entry in the document.
pub fn key(event: &Event) -> String {
    if event.key.is_empty() {
        event.kind.name().to_owned()
    } else {
        format!("{}:{}", event.kind.name(), event.key)
    }
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or_default()
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Minutes and hours, for people (`3 h 05 min`, `12 min`, `40 s`).
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// The entry of `key`, new when there is none.
fn entry<'a>(doc: &'a mut AlertsDoc, key: &str, kind: Kind) -> &'a mut AlertEntry {
    doc.entries
        .entry(key.to_owned())
        .or_insert_with(|| AlertEntry {
            kind,
            failing_since: None,
            reason: String::new(),
            mailed: false,
            last_mail_at: None,
            held_back: 0,
        })
}

/// `event` seen at `now`: updates `doc` and returns the mail to send, if any. `node` names this
/// node in the mail.
pub fn decide(doc: &mut AlertsDoc, event: &Event, now: DateTime<Utc>, node: &str) -> Option<Mail> {
    let key = key(event);
    let kind = event.kind;
    match &event.change {
        Change::Failing(reason) => {
            let entry = entry(doc, &key, kind);
            let since = *entry.failing_since.get_or_insert(now);
            entry.reason = reason.clone();
            failing_mail(entry, &key, now, node, since)
        }
        Change::Recovered(detail) => {
            let entry = doc.entries.remove(&key)?;
            let since = entry.failing_since?;
            if !entry.mailed {
                // Its failure was never mailed (it lasted less than its grace): nothing to say.
                return None;
            }
            let subject = kind.recovered_subject();
            let body = format!(
                "{subject}{}\n\nnode: {node}\nfailing since: {} ({} in all)\nlast reason: {}\n",
                detail_line(detail),
                when(since),
                human(elapsed(since, now)),
                entry.reason
            );
            Some(Mail {
                key,
                subject: format!("[xivo-ha {node}] {subject}{}", short(detail)),
                body,
            })
        }
        Change::Happened(detail) => {
            let entry = entry(doc, &key, kind);
            entry.reason = detail.clone();
            if entry
                .last_mail_at
                .is_some_and(|at| elapsed(at, now) < REPEAT_AFTER)
            {
                entry.held_back += 1;
                return None;
            }
            entry.mailed = true;
            entry.last_mail_at = Some(now);
            entry.held_back = 0;
            let subject = kind.failing_subject();
            Some(Mail {
                key,
                subject: format!("[xivo-ha {node}] {subject}{}", short(detail)),
                body: format!(
                    "{subject}{}\n\nnode: {node}\nat: {}\n",
                    detail_line(detail),
                    when(now)
                ),
            })
        }
    }
}

/// The failures whose grace ended since they were reported (a DB Replic sink that stopped and
/// reports nothing more): their mails, due at `now`.
pub fn due(doc: &mut AlertsDoc, now: DateTime<Utc>, node: &str) -> Vec<Mail> {
    let mut mails = Vec::new();
    for (key, entry) in doc.entries.iter_mut() {
        if let Some(since) = entry.failing_since
            && !entry.mailed
            && let Some(mail) = failing_mail(entry, key, now, node, since)
        {
            mails.push(mail);
        }
    }
    mails
}

/// The mail about a failure reported at `now`, failing since `since`: none within its grace
/// or within the hour after the last one.
fn failing_mail(
    entry: &mut AlertEntry,
    key: &str,
    now: DateTime<Utc>,
    node: &str,
    since: DateTime<Utc>,
) -> Option<Mail> {
    let kind: Kind = entry.kind;
    if elapsed(since, now) < kind.grace() {
        return None;
    }
    let repeat = entry.mailed;
    if repeat
        && entry
            .last_mail_at
            .is_some_and(|at| elapsed(at, now) < REPEAT_AFTER)
    {
        entry.held_back += 1;
        return None;
    }
    let held_back = std::mem::take(&mut entry.held_back);
    entry.mailed = true;
    entry.last_mail_at = Some(now);
    let subject = kind.failing_subject();
    let reason = &entry.reason;
    let mut body = format!(
        "{subject}: {reason}\n\nnode: {node}\nfailing since: {}{}\n",
        when(since),
        if repeat {
            format!(" ({}, still failing)", human(elapsed(since, now)))
        } else {
            String::new()
        }
    );
    if held_back > 0 {
        body.push_str(&format!(
            "reported {held_back} more times since the last mail (at most one mail an hour)\n"
        ));
    }
    body.push_str(&format!("what to do: {}\n", kind.hint()));
    Some(Mail {
        key: key.to_owned(),
        subject: format!(
            "[xivo-ha {node}] {subject}{}: {}",
            if repeat { " (still)" } else { "" },
            truncate(reason)
        ),
        body,
    })
}

fn detail_line(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn short(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {}", truncate(detail))
    }
}

/// A subject line stays short; the body has the whole text.
fn truncate(text: &str) -> String {
    const MAX: usize = 160;
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= MAX {
        line.to_owned()
    } else {
        let cut: String = line.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        "2026-12-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
            + chrono::Duration::minutes(minutes)
    }

    fn failing(kind: Kind, reason: &str) -> Event {
        Event::failing(kind, "", reason)
    }

    #[test]
    fn a_failure_is_mailed_at_once_then_at_most_hourly_and_its_recovery_once() {
        let mut doc = AlertsDoc::default();
        let event = failing(Kind::Replication, "connection refused by 192.0.2.20:5432");
        let mail = decide(&mut doc, &event, at(0), "xivo1").expect("first failure mailed");
        assert_eq!(
            mail.subject,
            "[xivo-ha xivo1] Slave replication failed: connection refused by 192.0.2.20:5432"
        );
        assert!(
            mail.body
                .starts_with("Slave replication failed: connection refused by 192.0.2.20:5432\n"),
            "{}",
            mail.body
        );
        assert_eq!(decide(&mut doc, &event, at(1), "xivo1"), None);
        assert_eq!(decide(&mut doc, &event, at(59), "xivo1"), None);
        let again = decide(&mut doc, &event, at(60), "xivo1").expect("an hour later");
        assert!(
            again.subject.contains("failed (still)"),
            "{}",
            again.subject
        );
        assert!(
            again.body.contains("reported 2 more times"),
            "{}",
            again.body
        );
        assert_eq!(decide(&mut doc, &event, at(61), "xivo1"), None);

        let ok = Event::recovered(Kind::Replication, "", "");
        let mail = decide(&mut doc, &ok, at(70), "xivo1").expect("recovery mailed");
        assert_eq!(
            mail.subject,
            "[xivo-ha xivo1] Slave replication works again"
        );
        assert!(mail.body.contains("1 h 10 min in all"), "{}", mail.body);
        assert!(doc.entries.is_empty());
        assert_eq!(decide(&mut doc, &ok, at(71), "xivo1"), None, "once");
        // A new failure after the recovery is news: mailed at once.
        assert!(decide(&mut doc, &event, at(72), "xivo1").is_some());
    }

    #[test]
    fn keys_are_limited_apart() {
        let mut doc = AlertsDoc::default();
        let cel = Event::failing(Kind::Sync, "a", "refused");
        let queue = Event::failing(Kind::Sync, "b", "refused");
        assert!(decide(&mut doc, &cel, at(0), "n").is_some());
        assert!(decide(&mut doc, &queue, at(0), "n").is_some());
        assert_eq!(decide(&mut doc, &cel, at(5), "n"), None);
    }

    #[test]
    fn a_sink_is_mailed_after_five_minutes_of_failure_and_a_short_one_not_at_all() {
        let mut doc = AlertsDoc::default();
        let sink = Event::failing(Kind::DbReplicSink, "cel → elasticsearch", "503");
        assert_eq!(decide(&mut doc, &sink, at(0), "n"), None);
        assert_eq!(decide(&mut doc, &sink, at(4), "n"), None);
        let ok = Event::recovered(Kind::DbReplicSink, "cel → elasticsearch", "");
        assert_eq!(decide(&mut doc, &ok, at(4), "n"), None, "never mailed");
        assert!(doc.entries.is_empty());

        assert_eq!(decide(&mut doc, &sink, at(10), "n"), None);
        // No more report (the sink stopped): the grace's end makes the mail due.
        assert!(due(&mut doc, at(14), "n").is_empty());
        let mails = due(&mut doc, at(15), "n");
        assert_eq!(mails.len(), 1);
        assert!(
            mails[0].subject.contains("DB Replic sink failing"),
            "{}",
            mails[0].subject
        );
        assert!(due(&mut doc, at(16), "n").is_empty());
        assert!(decide(&mut doc, &ok, at(20), "n").is_some());
    }

    #[test]
    fn a_one_off_event_is_mailed_at_most_hourly() {
        let mut doc = AlertsDoc::default();
        let ended = Event::happened(Kind::MaintenanceEnded, "", "upgrade, set by root@xivo1");
        let mail = decide(&mut doc, &ended, at(0), "n").unwrap();
        assert!(
            mail.subject
                .contains("Maintenance mode ended by its deadline")
        );
        assert_eq!(decide(&mut doc, &ended, at(30), "n"), None);
        assert!(decide(&mut doc, &ended, at(60), "n").is_some());
        assert!(due(&mut doc, at(200), "n").is_empty(), "not a failure");
    }

    #[test]
    fn failover_and_failback_carry_the_probe_evidence() {
        let mut doc = AlertsDoc::default();
        let down = Event::failing(
            Kind::Failover,
            "192.0.2.10",
            "3 rounds host down [icmp timeout]",
        );
        let mail = decide(&mut doc, &down, at(0), "xivo2").unwrap();
        assert!(mail.subject.contains("Failover"), "{}", mail.subject);
        assert!(mail.body.contains("[icmp timeout]"), "{}", mail.body);
        let up = Event::recovered(Kind::Failover, "192.0.2.10", "5 good rounds [sip 200 OK]");
        let mail = decide(&mut doc, &up, at(3), "xivo2").unwrap();
        assert!(mail.subject.contains("Failback"), "{}", mail.subject);
        assert!(mail.body.contains("[sip 200 OK]"), "{}", mail.body);
    }
}
