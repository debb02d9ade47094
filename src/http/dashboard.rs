//! The dashboard page (`GET /`): HTML rendered here from the very [`Status`] `/status` serves
//! and from the monitor's recent rounds ([`Run`]s, in memory), self-contained (inline CSS, an
//! inline SVG timeline drawn by [`super::timeline`], one small script that re-fetches the page every 2 s and swaps its
//! body), one column for a phone. Every value from outside (ha.conf, error texts, reasons) goes
//! through [`esc`].
//!
//! Stable hooks for tests and scripts: `body[data-role]`, `#headline[data-tone]`,
//! `svg#timeline rect.mark.<path>.ok|bad` (one per run of rounds), `line.change.to-<verdict>`.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::headline::{Headline, headline};
use super::problems;
use super::timeline::timeline;
use crate::ha::NodeType;
use crate::monitor::peer::PeerState;
use crate::monitor::rounds::Run;
use crate::status::Status;
use crate::status::documents::{
    DbReplicDoc, JobRecord, MonitorDoc, ReplicationDetails, SyncDetails,
};

/// `text` with HTML's special characters escaped (for text and attribute values alike).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:60rem;padding:.6rem;color:#1d1d1f;background:#f6f6f7}\
h1{font-size:1.15rem;margin:.2rem 0}h2{font-size:1rem;margin:1.1rem 0 .3rem}\
#headline{font-size:1.25rem;font-weight:600;padding:.7rem .8rem;border-radius:.4rem;color:#fff;margin:.4rem 0}\
.good{background:#1f8a45}.warn{background:#b86e00}.bad{background:#c62828}.idle{background:#6b6b70}\
table{border-collapse:collapse;width:100%;font-size:.85rem;background:#fff}td,th{border-bottom:1px solid #ddd;padding:.25rem .35rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
th{background:#eee}.ok{color:#1f8a45}.failed{color:#c62828;font-weight:600}.warning,.retrying{color:#b86e00;font-weight:600}.stopped{color:#c62828;font-weight:600}.muted{color:#6b6b70;font-size:.8rem}\
svg{width:100%;height:auto;background:#fff}svg .lane{fill:#ececee}svg .mark.ok{fill:#2ea44f}svg .mark.bad{fill:#d73a3a}svg text{font-size:11px;fill:#444}@media (max-width:600px){svg text{font-size:20px}}\
svg .change{stroke:#111;stroke-width:1.5}svg .change.to-down{stroke:#c62828}svg .change.to-up{stroke:#1f8a45}\
.offline #headline::after{content:' (this page is not updating: the monitor does not answer)'}";

/// Re-fetches the page every 2 s and swaps its body; a failed fetch marks the page offline.
const SCRIPT: &str = "setInterval(async()=>{try{const r=await fetch(location.href,{cache:'no-store'});\
if(!r.ok)throw 0;const d=new DOMParser().parseFromString(await r.text(),'text/html');\
document.body.replaceWith(d.body)}catch(e){document.body.classList.add('offline')}},2000);";

/// The whole page.
pub fn render(status: &Status, runs: &[Run], now: DateTime<Utc>) -> String {
    let Headline { tone, text } = headline(status, now);
    let docs = &status.components;
    let mut out = String::with_capacity(64 * 1024);
    let role = status.node_type;
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>xivo-ha: {}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>\
<body data-role=\"{role}\"><h1 id=\"role\">{}</h1>\
<p id=\"headline\" class=\"{t}\" data-tone=\"{t}\">{}</p>",
        esc(&text),
        esc(&role_line(status)),
        esc(&text),
        t = tone.name(),
    );
    if let Some(monitor) = &docs.monitor {
        if monitor.node_type == NodeType::Slave {
            slave_sections(&mut out, monitor, runs, now);
        }
        if monitor.node_type == NodeType::Master {
            peer_section(&mut out, monitor, now);
        }
        if !monitor.hourly.is_empty() {
            hourly_section(&mut out, monitor);
        }
    }
    if role == NodeType::Master || docs.replication.is_some() || docs.sync.is_some() {
        jobs_section(&mut out, status, now);
    }
    if let Some(dbreplic) = &docs.dbreplic {
        dbreplic_section(&mut out, dbreplic, now);
    }
    problems::alerts_section(&mut out, docs.alerts.as_ref(), now);
    problems::doctor_section(&mut out, docs.doctor.as_ref(), now);
    let updated = docs
        .monitor
        .as_ref()
        .map(|m| m.updated_at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into());
    let _ = write!(
        out,
        "<p class=\"muted\">page at {} · monitor state of {updated} · \
<a href=\"status\">/status</a> · <a href=\"metrics\">/metrics</a></p></body></html>",
        now.format("%Y-%m-%d %H:%M:%S UTC")
    );
    out
}

/// The error page when ha.conf cannot be read.
pub fn render_error(error: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>xivo-ha: error</title>\
<style>{STYLE}</style><script>{SCRIPT}</script></head><body data-role=\"unknown\">\
<h1 id=\"role\">role unknown</h1><p id=\"headline\" class=\"bad\" data-tone=\"bad\">{}</p></body></html>",
        esc(error)
    )
}

fn role_line(status: &Status) -> String {
    match status.node_type {
        NodeType::Disabled => "HA disabled".to_owned(),
        NodeType::Master => format!("master · slave at {}", status.remote_address),
        NodeType::Slave => format!("slave · master at {}", status.remote_address),
    }
}

fn hms(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S").to_string()
}

/// `at`, with how long ago when it is not today's last minute.
pub(super) fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let ago = (now - at).num_seconds();
    let ago = match ago {
        ..=0 => "now".to_owned(),
        1..=119 => format!("{ago} s ago"),
        120..=7199 => format!("{} min ago", ago / 60),
        _ => format!("{} h ago", ago / 3600),
    };
    format!("{} ({ago})", at.format("%Y-%m-%d %H:%M:%S"))
}

fn slave_sections(out: &mut String, monitor: &MonitorDoc, runs: &[Run], now: DateTime<Utc>) {
    out.push_str("<h2>Probe rounds (up to the last 10 minutes)</h2>");
    timeline(out, runs, &monitor.transitions, now);
    if let Some(w) = &monitor.witnesses {
        let _ = write!(
            out,
            "<p class=\"muted\" id=\"witnesses\">witnesses: {}</p>",
            esc(w)
        );
    }
    if let Some(c) = &monitor.counters {
        let _ = write!(
            out,
            "<p class=\"muted\">{} rounds: {} good, {} SIP dead, {} host down; \
ICMP silent {}, TCP silent {}; master declared down {} times, up {} times</p>",
            c.rounds,
            c.good,
            c.sip_dead,
            c.host_down,
            c.icmp_silent,
            c.tcp_silent,
            c.to_down,
            c.to_up
        );
    }
    if let Some(s) = &monitor.services {
        out.push_str("<h2>This node's services</h2><table><tr><th>container</th><th>state</th><th>health</th></tr>");
        for c in &s.containers {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.name),
                esc(&c.state),
                esc(c.health.as_deref().unwrap_or("-"))
            );
        }
        out.push_str("</table><p class=\"muted\">");
        match s.desired {
            Some(d) => {
                let _ = write!(
                    out,
                    "wanted {d}{}",
                    if s.settled { "" } else { " (in progress)" }
                );
            }
            None => out.push_str("untouched until the first verdict"),
        }
        if let (Some(action), Some(at)) = (&s.last_action, s.last_action_at) {
            let _ = write!(out, "; last action {} at {}", esc(action), hms(at));
        }
        if s.errors > 0 {
            let _ = write!(
                out,
                "; <span class=\"failed\">{} Docker errors, last: {}</span>",
                s.errors,
                esc(s.last_error.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</p>");
    }
    out.push_str("<h2>Verdict changes and takeovers</h2>");
    if monitor.transitions.is_empty() {
        out.push_str("<p class=\"muted\">none since the monitor started watching this master</p>");
        return;
    }
    out.push_str(
        "<table id=\"transitions\"><tr><th>at</th><th>master</th><th>reason</th><th>evidence</th></tr>",
    );
    for t in monitor.transitions.iter().rev() {
        let _ = write!(
            out,
            "<tr class=\"transition to-{to}\"><td>{}</td><td>{} → <b>{to}</b></td><td>{}</td><td>{}</td></tr>",
            when(t.at, now),
            t.from,
            esc(&t.reason),
            esc(&t.evidence),
            to = t.to,
        );
    }
    out.push_str("</table>");
}

/// On a master: its slave as the master's probes see it, and whether the jobs are held.
fn peer_section(out: &mut String, monitor: &MonitorDoc, now: DateTime<Utc>) {
    out.push_str("<h2>The slave, as this master sees it</h2>");
    let Some(peer) = &monitor.peer else {
        out.push_str("<p class=\"muted\">not watched: ha.conf names no slave</p>");
        return;
    };
    let state = match peer.state {
        PeerState::Active => "<b class=\"failed\">active: it serves calls</b>",
        PeerState::Standby => "<span class=\"ok\">standby</span>",
        PeerState::Unknown => "unknown (not enough rounds yet, or unreachable since the start)",
    };
    let ever =
        |at: Option<DateTime<Utc>>| at.map(|at| when(at, now)).unwrap_or_else(|| "never".into());
    let _ = write!(
        out,
        "<table id=\"peer\" data-state=\"{}\"><tr><th>slave {}</th><td>{state}{}</td></tr>\
<tr><th>reachable</th><td>{}</td></tr><tr><th>its SIP last answered</th><td>{}</td></tr>\
<tr><th>last silent</th><td>{}</td></tr><tr><th>failbacks seen</th><td>{}</td></tr>\
<tr><th>replication and sync</th><td>{}</td></tr></table>",
        peer.state,
        peer.address,
        peer.since
            .map(|at| format!(" since {}", when(at, now)))
            .unwrap_or_default(),
        if peer.reachable {
            "yes"
        } else {
            "<span class=\"failed\">no: nothing answered in the last round</span>"
        },
        ever(peer.last_answer_at),
        ever(peer.last_silence_at),
        peer.failbacks,
        match &monitor.jobs_held {
            Some(why) => format!(
                "<span class=\"warning\">held: {}</span> ({} runs skipped)",
                esc(why),
                monitor.jobs_skipped
            ),
            None => "run on schedule".to_owned(),
        },
    );
}

fn hourly_section(out: &mut String, monitor: &MonitorDoc) {
    out.push_str("<h2>Hourly jobs</h2><table><tr><th>job</th><th>started</th><th>result</th><th>seconds</th><th>error</th></tr>");
    for run in &monitor.hourly {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td>{}<td>{:.1}</td><td>{}</td></tr>",
            esc(&run.details.job),
            run.started_at.format("%Y-%m-%d %H:%M:%S"),
            result_cell(run),
            run.seconds,
            esc(run.error.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");
}

fn result_cell<D>(job: &JobRecord<D>) -> String {
    format!("<td class=\"{r}\">{r}</td>", r = job.result())
}

/// The replication and the syncs, as this node (a master) last ran them: what the master knows
/// of its slave.
fn jobs_section(out: &mut String, status: &Status, now: DateTime<Utc>) {
    let docs = &status.components;
    let _ = write!(
        out,
        "<h2>Replication and sync to the slave {}</h2>",
        esc(&status.remote_address)
    );
    let mut rows = String::new();
    if let Some(r) = &docs.replication {
        job_row(
            &mut rows,
            "replication",
            r,
            &replication_details(&r.details),
            now,
        );
    }
    for (name, job) in [("sync", &docs.sync), ("sync --back", &docs.sync_back)] {
        if let Some(job) = job {
            job_row(&mut rows, name, job, &sync_details(&job.details), now);
        }
    }
    if rows.is_empty() {
        out.push_str("<p class=\"muted\">no replication nor sync recorded yet</p>");
        return;
    }
    let _ = write!(
        out,
        "<table id=\"jobs\"><tr><th>job</th><th>started</th><th>result</th><th>what</th><th>last success</th></tr>{rows}</table>"
    );
    if let Some(r) = &docs.replication {
        let _ = write!(
            out,
            "<p class=\"muted\">the slave's configuration (as far as the master knows: {}) {}</p>",
            esc(&r.details.slave),
            match r.last_success_at {
                Some(at) => format!(
                    "is {} behind (last good replication at {})",
                    lag(now - at),
                    at.format("%H:%M:%S")
                ),
                None => "never got a replication".into(),
            }
        );
    }
}

fn lag(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        ..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

fn replication_details(d: &ReplicationDetails) -> String {
    let mut out = format!(
        "{} tables copied, {} unchanged, {} rows, {} bytes",
        d.tables_copied, d.tables_unchanged, d.rows_copied, d.bytes_copied
    );
    if !d.merged_back.is_empty() || !d.conflicts.is_empty() {
        out.push_str(&format!(
            "; {} user statuses merged back, {} conflicts",
            d.merged_back.len(),
            d.conflicts.len()
        ));
    }
    if !d.slave_changes_overwritten.is_empty() {
        out.push_str(&format!(
            "; the slave's changes overwritten: {}",
            crate::replication::changed_tables(&d.slave_changes_overwritten)
        ));
    }
    out
}

fn sync_details(d: &SyncDetails) -> String {
    format!(
        "{} files, {} bytes, {} deleted{}{}",
        d.files_transferred,
        d.bytes_transferred,
        d.files_deleted,
        if d.skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped {}", d.skipped.join(", "))
        },
        if d.files.is_empty() {
            String::new()
        } else {
            format!("; {}", d.files.join(", "))
        }
    )
}

fn job_row<D>(out: &mut String, name: &str, job: &JobRecord<D>, what: &str, now: DateTime<Utc>) {
    let what = match &job.error {
        Some(e) => format!("{what}; <span class=\"failed\">{}</span>", esc(e)),
        None => esc(what),
    };
    let _ = write!(
        out,
        "<tr class=\"job\" data-job=\"{}\"><td>{}</td><td>{}</td>{}<td>{what} in {:.1} s</td><td>{}</td></tr>",
        esc(name),
        esc(name),
        when(job.started_at, now),
        result_cell(job),
        job.seconds,
        job.last_success_at
            .map(|at| when(at, now))
            .unwrap_or_else(|| "never".into()),
    );
}

fn dbreplic_section(out: &mut String, doc: &DbReplicDoc, now: DateTime<Utc>) {
    let _ = write!(
        out,
        "<h2>DB Replic ({}, origin {})</h2><table id=\"dbreplic\"><tr><th>table</th><th>sink</th>\
<th>state</th><th>last id delivered</th><th>rows behind</th><th>lag</th><th>last error</th></tr>",
        doc.mode,
        esc(&doc.origin)
    );
    for (table, sinks) in &doc.tables {
        for (sink, s) in sinks {
            let error = match (&s.last_error, s.last_error_at) {
                (Some(e), Some(at)) => format!("{} ({})", esc(e), when(at, now)),
                (Some(e), None) => esc(e),
                (None, _) => String::new(),
            };
            // No undelivered row is older than the last time none was behind.
            let lag_cell = match (s.behind, s.caught_up_at) {
                (None, _) => "?".to_owned(),
                (Some(0), _) => "none".to_owned(),
                (Some(_), Some(at)) => format!("≤ {}", lag(now - at)),
                (Some(_), None) => "not caught up since DB Replic started".to_owned(),
            };
            let holes = match (s.holes_waiting, s.hole_after) {
                (0, _) => String::new(),
                (n, after) => format!(
                    "<br><span class=\"muted\">waiting on {n} missing id(s){}{}, {} open transaction(s)</span>",
                    after.map(|a| format!(" after #{a}")).unwrap_or_default(),
                    s.hole_since
                        .map(|at| format!(" since {}", when(at, now)))
                        .unwrap_or_default(),
                    s.hole_transactions
                ),
            };
            let _ = write!(
                out,
                "<tr class=\"sink {state}\" data-table=\"{t}\" data-sink=\"{k}\"><td>{t}</td><td>{k}<br><span class=\"muted\">{}</span></td>\
<td class=\"{state}\">{state}{holes}</td><td>{}</td><td>{}</td><td>{lag_cell}</td><td>{error}</td></tr>",
                esc(&s.destination),
                s.last_id,
                s.behind
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "?".into()),
                t = esc(table),
                k = esc(sink),
                state = s.state,
            );
        }
    }
    out.push_str("</table>");
    if let Some(c) = &doc.config_tables {
        let _ = write!(
            out,
            "<p class=\"muted\">configuration tables ({}): {} rows, last refresh {}{}</p>",
            c.tables.len(),
            c.rows,
            c.last_refresh
                .map(|at| when(at, now))
                .unwrap_or_else(|| "never".into()),
            c.last_error
                .as_ref()
                .map(|e| format!("; <span class=\"failed\">{}</span>", esc(e)))
                .unwrap_or_default()
        );
    }
    match doc.updated_at {
        // It saves every second while it runs.
        Some(at) if (now - at).num_seconds() > super::headline::STALE_AFTER_S => {
            let _ = write!(
                out,
                "<p class=\"failed\" id=\"dbreplic-stale\">DB Replic's state is of {}: it is not running (or stuck)</p>",
                when(at, now)
            );
        }
        Some(at) => {
            let _ = write!(
                out,
                "<p class=\"muted\">DB Replic's state of {}</p>",
                when(at, now)
            );
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::services::{Desired, KeeperStatus};
    use crate::monitor::verdict::{Observation, Verdict};
    use crate::status::documents::{
        DbReplicMode, Documents, ReplicationDoc, SinkState, SinkStatus, TransitionRecord,
    };

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn now() -> DateTime<Utc> {
        at("2026-11-25T10:10:00Z")
    }

    fn status(node_type: NodeType, monitor: Option<MonitorDoc>) -> Status {
        Status {
            node_type,
            remote_address: "192.0.2.10".into(),
            components: Documents {
                monitor,
                ..Documents::default()
            },
        }
    }

    fn slave(verdict: Verdict, settled: bool) -> MonitorDoc {
        let down = TransitionRecord {
            from: Verdict::Up,
            to: Verdict::Down,
            at: at("2026-11-25T10:04:12Z"),
            reason: "no SIP answer for 1.2 s (host down)".into(),
            evidence: "icmp timeout; tcp timeout; sip timeout".into(),
        };
        let up = TransitionRecord {
            from: Verdict::Unknown,
            to: Verdict::Up,
            at: at("2026-11-25T10:01:00Z"),
            reason: "3 good rounds".into(),
            evidence: "sip 200 OK in 1 ms".into(),
        };
        let transitions = match verdict {
            Verdict::Down => vec![up, down],
            Verdict::Up => vec![up],
            Verdict::Unknown => vec![],
        };
        MonitorDoc {
            master: Some("192.0.2.10".parse().unwrap()),
            witnesses: Some("192.0.2.1 (icmp)".into()),
            verdict: Some(verdict),
            since: transitions.last().map(|t| t.at),
            last_transition: transitions.last().cloned(),
            transitions,
            services: Some(KeeperStatus {
                desired: Some(match verdict {
                    Verdict::Down => Desired::Running,
                    _ => Desired::Stopped,
                }),
                settled,
                containers: vec![],
                errors: 0,
                last_error: None,
                last_error_at: None,
                last_action: None,
                last_action_at: None,
                ..KeeperStatus::default()
            }),
            ..MonitorDoc::bare(NodeType::Slave, now())
        }
    }

    /// Rounds every second over the last 10 minutes, the master silent from 10:04:10, the
    /// witness asked (and answering) in the two rounds before the takeover.
    fn runs() -> Vec<Run> {
        let log = crate::monitor::rounds::RoundLog::default();
        for i in 0..600 {
            let t = at("2026-11-25T10:00:00Z") + chrono::Duration::seconds(i);
            let up = t < at("2026-11-25T10:04:10Z");
            let witness = (t >= at("2026-11-25T10:04:11Z") && t <= at("2026-11-25T10:04:12Z"))
                .then_some(true);
            let seen = Observation {
                icmp: up,
                tcp: up,
                sip: up,
            };
            log.push(crate::monitor::rounds::Mark::of(t, seen, witness));
        }
        log.snapshot()
    }

    fn page(status: &Status, runs: &[Run]) -> String {
        let html = render(status, runs, now());
        assert!(html.starts_with("<!doctype html>"), "{html}");
        assert!(html.ends_with("</body></html>"), "{html}");
        assert_eq!(html.matches("<script>").count(), 1, "one inline script");
        assert!(!html.contains("src=\"http"), "no external asset");
        html
    }

    fn headline_of(html: &str) -> &str {
        let start = html.find("id=\"headline\"").unwrap();
        let text = &html[start..];
        &text[text.find('>').unwrap() + 1..text.find("</p>").unwrap()]
    }

    #[test]
    fn maintenance_isolation_and_drain_have_their_own_headlines() {
        let mut on = status(NodeType::Slave, Some(slave(Verdict::Down, true)));
        on.components.maintenance = Some(crate::status::documents::MaintenanceDoc {
            summary: String::new(),
            reason: "upgrade to 2026.12".into(),
            set_by: "root@xivo-b".into(),
            set_at: at("2026-11-25T10:00:00Z"),
            until: at("2026-11-25T12:00:00Z"),
        });
        let html = page(&on, &[]);
        assert!(
            headline_of(&html)
                .starts_with("MAINTENANCE until 12:00 (upgrade to 2026.12, set by root@xivo-b)"),
            "{}",
            headline_of(&html)
        );
        // Past its deadline, the verdict speaks again.
        on.components.maintenance.as_mut().unwrap().until = at("2026-11-25T10:00:01Z");
        assert!(headline_of(&page(&on, &[])).starts_with("SERVING"));

        let mut cut_off = slave(Verdict::Down, true);
        cut_off.isolated = Some(crate::status::documents::IsolationRecord {
            since: at("2026-11-25T10:04:15Z"),
            witnesses: "192.0.2.1 no answer".into(),
        });
        let html = page(&status(NodeType::Slave, Some(cut_off)), &[]);
        assert_eq!(
            headline_of(&html),
            "isolated: no witness answers since 10:04:15, not taking over"
        );

        let mut draining = slave(Verdict::Up, false);
        draining.services.as_mut().unwrap().draining = Some(crate::monitor::drain::DrainStatus {
            containers: vec!["asterisk".into()],
            since: at("2026-11-25T10:09:00Z"),
            calls: Some(2),
            max_s: 1800,
        });
        let html = page(&status(NodeType::Slave, Some(draining)), &[]);
        assert_eq!(
            headline_of(&html),
            "master back: draining 2 calls before stopping"
        );
    }

    #[test]
    fn the_replication_row_says_what_it_did_with_the_slaves_changes() {
        let mut details = ReplicationDetails {
            tables_copied: 2,
            ..ReplicationDetails::default()
        };
        assert_eq!(
            replication_details(&details),
            "2 tables copied, 0 unchanged, 0 rows, 0 bytes"
        );
        details.merged_back = vec![Default::default(); 3];
        details.slave_changes_overwritten = vec![crate::status::documents::SlaveChange {
            table: "extensions".into(),
            rows: 1,
        }];
        assert_eq!(
            replication_details(&details),
            "2 tables copied, 0 unchanged, 0 rows, 0 bytes; 3 user statuses merged back, 0 conflicts; the slave's changes overwritten: extensions (1 row)"
        );
    }

    #[test]
    fn a_disabled_node() {
        let html = page(
            &status(
                NodeType::Disabled,
                Some(MonitorDoc::bare(NodeType::Disabled, now())),
            ),
            &[],
        );
        assert!(html.contains("data-role=\"disabled\""));
        assert_eq!(headline_of(&html), "HA disabled");
        assert!(html.contains("data-tone=\"idle\""));
        assert!(!html.contains("<svg"), "no timeline without probing");
    }

    #[test]
    fn no_monitor_state_yet() {
        let html = page(&status(NodeType::Slave, None), &[]);
        assert_eq!(
            headline_of(&html),
            "the monitor has not recorded its state yet"
        );
    }

    #[test]
    fn a_master_with_its_jobs_and_db_replic() {
        let mut status = status(
            NodeType::Master,
            Some(MonitorDoc::bare(NodeType::Master, now())),
        );
        status.components.replication = Some(ReplicationDoc::sample(true));
        status.components.dbreplic = Some(DbReplicDoc {
            mode: DbReplicMode::Normal,
            origin: "xivo1".into(),
            tables: [(
                "cel".to_owned(),
                [(
                    "elasticsearch".to_owned(),
                    SinkStatus {
                        destination: "http://127.0.0.1:9200".into(),
                        last_id: 42,
                        behind: Some(7),
                        last_error: Some("503 <busy>".into()),
                        last_error_at: Some(at("2026-11-25T10:09:00Z")),
                        caught_up_at: Some(at("2026-11-25T10:09:30Z")),
                        state: SinkState::Retrying,
                        ..SinkStatus::default()
                    },
                )]
                .into(),
            )]
            .into(),
            ..DbReplicDoc::default()
        });
        let html = page(&status, &[]);
        assert!(html.contains("data-role=\"master\""));
        assert_eq!(
            headline_of(&html),
            "master: serving; the slave 192.0.2.10 got the configuration at 10:00:00"
        );
        assert!(html.contains("2 tables copied, 14 unchanged, 30 rows, 4000 bytes in 1.5 s"));
        assert!(html.contains("is 70 min behind"), "{html}");
        assert!(
            html.contains(
                "<td>42</td><td>7</td><td>≤ 30 s</td><td>503 &lt;busy&gt; (2026-11-25 10:09:00 (60 s ago))"
            ),
            "{html}"
        );

        status.components.replication = Some(ReplicationDoc::sample(false));
        let html = page(&status, &[]);
        assert_eq!(
            headline_of(&html),
            "master: the last replication to the slave 192.0.2.10 FAILED at 10:00:00: connection &lt;refused&gt;"
        );
        assert!(html.contains("data-tone=\"bad\""));
        assert!(
            html.contains("not watched: ha.conf names no slave"),
            "{html}"
        );

        // The slave serving in the master's place: said first, the jobs held.
        let monitor = status.components.monitor.as_mut().unwrap();
        monitor.peer = Some(crate::monitor::peer::PeerStatus {
            address: "192.0.2.10".parse().unwrap(),
            state: PeerState::Active,
            since: Some(at("2026-11-25T10:05:00Z")),
            last_answer_at: Some(at("2026-11-25T10:09:59Z")),
            last_silence_at: None,
            reachable: true,
            failbacks: 1,
        });
        monitor.jobs_held = Some("the slave is active".into());
        monitor.jobs_skipped = 4;
        let html = page(&status, &[]);
        assert_eq!(
            headline_of(&html),
            "master: the slave 192.0.2.10 is ACTIVE (serving calls since 10:05:00): replication and sync held until it stands by"
        );
        assert!(
            html.contains("<table id=\"peer\" data-state=\"active\">"),
            "{html}"
        );
        assert!(
            html.contains("held: the slave is active</span> (4 runs skipped)"),
            "{html}"
        );
        assert!(
            html.contains("<tr><th>last silent</th><td>never</td></tr>"),
            "{html}"
        );
    }

    #[test]
    fn a_slave_standing_by() {
        let html = page(
            &status(NodeType::Slave, Some(slave(Verdict::Up, true))),
            &runs()[..1],
        );
        assert!(html.contains("data-role=\"slave\""));
        assert_eq!(headline_of(&html), "standing by, master up");
        assert!(html.contains("data-tone=\"good\""));
        // 250 good rounds: one bar a row, the witness not asked.
        assert!(html.contains("<svg id=\"timeline\""));
        assert!(html.contains("data-rounds=\"250\""), "{html}");
        assert_eq!(html.matches("class=\"mark sip ok\"").count(), 1);
        assert_eq!(html.matches("class=\"mark sip bad\"").count(), 0);
        assert_eq!(html.matches("class=\"mark witness").count(), 0);
        assert_eq!(html.matches("class=\"change to-up\"").count(), 1);

        let html = page(
            &status(NodeType::Slave, Some(slave(Verdict::Up, false))),
            &[],
        );
        assert_eq!(
            headline_of(&html),
            "master up: stopping this node&#39;s services"
        );
        let html = page(
            &status(NodeType::Slave, Some(slave(Verdict::Unknown, true))),
            &[],
        );
        assert_eq!(headline_of(&html), "watching the master: no verdict yet");
    }

    #[test]
    fn a_slave_serving_with_its_timeline_and_transitions() {
        let html = page(
            &status(NodeType::Slave, Some(slave(Verdict::Down, true))),
            &runs(),
        );
        assert_eq!(
            headline_of(&html),
            "SERVING: the master is down since 10:04:12 (no SIP answer for 1.2 s (host down))"
        );
        assert!(html.contains("data-tone=\"bad\""));
        for path in ["icmp", "tcp", "sip"] {
            assert_eq!(
                html.matches(&format!("class=\"mark {path} ok\"")).count(),
                1
            );
            assert_eq!(
                html.matches(&format!("class=\"mark {path} bad\"")).count(),
                1
            );
        }
        // The witness, asked before the takeover, answered.
        assert_eq!(html.matches("class=\"mark witness ok\"").count(), 1);
        assert!(
            html.contains("<p class=\"muted\" id=\"witnesses\">witnesses: 192.0.2.1 (icmp)</p>"),
            "{html}"
        );
        assert_eq!(html.matches("class=\"mark witness bad\"").count(), 0);
        assert_eq!(html.matches("class=\"change to-down\"").count(), 1);
        // Newest first.
        let down = html.find("<tr class=\"transition to-down\"").unwrap();
        let up = html.find("<tr class=\"transition to-up\"").unwrap();
        assert!(down < up);
        // Rounds older than the window are not drawn.
        let later = render(
            &status(NodeType::Slave, Some(slave(Verdict::Down, true))),
            &runs(),
            now() + chrono::Duration::seconds(300),
        );
        assert_eq!(later.matches("class=\"mark sip").count(), 1);
        assert!(later.contains("data-rounds=\"347\""), "{later}");

        let html = page(
            &status(NodeType::Slave, Some(slave(Verdict::Down, false))),
            &[],
        );
        assert!(headline_of(&html).starts_with("STARTING the services: the master is down"));
    }

    #[test]
    fn a_stale_state_or_an_unreadable_ha_conf_says_so() {
        let mut doc = slave(Verdict::Up, true);
        doc.updated_at = now() - chrono::Duration::seconds(45);
        let html = page(&status(NodeType::Slave, Some(doc.clone())), &[]);
        assert_eq!(
            headline_of(&html),
            "the monitor&#39;s state is 45 s old: its loop is stuck or stopped"
        );
        doc.updated_at = now();
        doc.config_error = Some("ha.conf: expected value at line 1".into());
        let html = page(&status(NodeType::Slave, Some(doc)), &[]);
        assert!(headline_of(&html).starts_with("ha.conf unreadable, still acting as slave"));
        assert!(render_error("ha.conf: <bad>").contains("ha.conf: &lt;bad&gt;"));
    }

    #[test]
    fn every_outside_value_is_escaped() {
        let mut st = status(NodeType::Slave, Some(slave(Verdict::Down, true)));
        st.remote_address = "<script>alert(1)</script>".into();
        let monitor = st.components.monitor.as_mut().unwrap();
        monitor.transitions[1].reason = "a \"quoted\" <b>reason</b> & more".into();
        monitor.last_transition = monitor.transitions.last().cloned();
        let html = page(&st, &runs());
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<b>reason</b>"));
        assert!(html.contains("a &quot;quoted&quot; &lt;b&gt;reason&lt;/b&gt; &amp; more"));
    }
}
