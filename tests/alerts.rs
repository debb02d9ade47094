//! Alert mails against a real SMTP server (aiosmtpd, started by the test on a loopback port):
//! a failed replication run by hand prints XiVO's `Slave replication failed: <reason>` and
//! mails it to the recipients, at most once an hour while it keeps failing; with the mail
//! server down the job still runs and `status` says the mail could not be sent; a replication
//! that finds changes made on the slave (after a failback) mails what it merged back and what
//! it overwrote.

mod common;

use std::time::Duration;

use common::smtp::start_smtp_server;
use common::*;

/// A slave database nobody listens for (loopback port 1): the replication fails at once.
const DEAD_SLAVE: &str = "postgresql://asterisk@127.0.0.1:1/asterisk?connect_timeout=2";

fn failed_replication(root: &std::path::Path, master: &TestDb, smtp: &str) -> std::process::Output {
    // <slave_ip> is data only (--target-db says where the data goes), and the SMTP server is on
    // this machine's loopback: a test host's address, which `configure` accepts.
    let host = common::testhost::TestHost::create();
    let slave_ip = host.ip.to_string();
    xivo_ha_env(
        root,
        &master.url(),
        &[
            ("XIVO_HA_ALERT_SMTP", smtp),
            ("XIVO_HA_ALERT_TO", "root@localhost, ops@localhost"),
            ("XIVO_HA_ALERT_FROM", "xivo-ha@xivo1.test"),
        ],
        &["db-replication", &slave_ip, "--target-db", DEAD_SLAVE],
    )
}

/// The line XiVO's script prints, from the command's stderr.
fn xivo_line(output: &std::process::Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{}", stderr(output));
    stderr(output)
        .lines()
        .find(|l| l.starts_with("Slave replication failed: "))
        .unwrap_or_else(|| panic!("no `Slave replication failed:` in:\n{}", stderr(output)))
        .to_owned()
}

#[tokio::test]
async fn a_failed_replication_mails_root_with_the_reason_once_an_hour() {
    let master = TestDb::create().await;
    let smtp = start_smtp_server();
    let root = tempfile::tempdir().unwrap();

    let output = failed_replication(root.path(), &master, &smtp.address());
    let line = xivo_line(&output);
    let reason = line.strip_prefix("Slave replication failed: ").unwrap();
    assert!(
        reason.contains("127.0.0.1:1"),
        "the reason names the slave: {line}"
    );

    let mails = smtp.wait_messages(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    let subject = mail.subject();
    assert!(
        subject.contains("Slave replication failed: ") && subject.contains("127.0.0.1:1"),
        "{subject}"
    );
    assert_eq!(
        mail.header("X-RcptTo").as_deref(),
        Some("root@localhost, ops@localhost")
    );
    assert_eq!(
        mail.header("X-MailFrom").as_deref(),
        Some("xivo-ha@xivo1.test")
    );
    assert!(
        mail.body().contains(&line),
        "the body has XiVO's line `{line}`:\n{}",
        mail.body()
    );

    // Failing again within the hour: no second mail (the command waits for its alerts before
    // it exits, so the count is final when it returns).
    let output = failed_replication(root.path(), &master, &smtp.address());
    xivo_line(&output);
    assert_eq!(smtp.messages().len(), 1, "at most one mail an hour");

    let status = xivo_ha(root.path(), "", &["status"]);
    assert_success(&status);
    let text = stdout(&status);
    let alerts = text
        .lines()
        .find(|l| l.starts_with("alerts: "))
        .unwrap_or_else(|| panic!("no alerts line in:\n{text}"));
    assert!(
        alerts.contains("1 sent, 0 not sent") && alerts.contains("failing: replication since"),
        "{alerts}"
    );
    // The dashboard's list of recent mails: the one sent.
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&xivo_ha(root.path(), "", &["status", "--json"]))).unwrap();
    let recent = json["components"]["alerts"]["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 1, "{recent:#?}");
    assert_eq!(recent[0]["subject"].as_str(), Some(subject.as_str()));
    assert!(recent[0]["error"].is_null(), "{recent:#?}");
}

#[tokio::test]
async fn mail_server_down_the_job_still_runs_and_status_says_the_mail_failed() {
    let master = TestDb::create().await;
    // A loopback port nobody listens on.
    let port = common::sshd::free_port();
    let root = tempfile::tempdir().unwrap();

    let output = failed_replication(root.path(), &master, &format!("127.0.0.1:{port}"));
    xivo_line(&output);
    let err = stderr(&output);
    assert!(err.contains("alert mail not sent"), "{err}");
    assert!(
        err.lines().last().unwrap().starts_with("xivo-ha: error: "),
        "the job's own error stays the last word:\n{err}"
    );
    // The job ran and recorded its run.
    let recorded = std::fs::read_to_string(root.path().join("var/lib/xivo-ha/replication.json"))
        .expect("the replication recorded its run");
    assert!(recorded.contains("\"ok\": false"), "{recorded}");

    let status = xivo_ha(root.path(), "", &["status", "--json"]);
    assert_success(&status);
    let json: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    let alerts = &json["components"]["alerts"];
    assert_eq!(alerts["mails_failed"], 1, "{alerts:#}");
    let error = alerts["last_failure"]["error"].as_str().unwrap();
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    let summary = alerts["summary"].as_str().unwrap();
    assert!(summary.contains("LAST mail not sent"), "{summary}");
    assert_eq!(
        alerts["recent"][0]["error"].as_str(),
        Some(error),
        "{alerts:#}"
    );
}

#[tokio::test]
async fn the_slaves_changes_found_after_a_failback_are_mailed_with_the_list() {
    let (master, slave) = tokio::join!(TestDb::create(), TestDb::create());
    let smtp = start_smtp_server();
    let root = tempfile::tempdir().unwrap();
    let host = common::testhost::TestHost::create();
    let slave_ip = host.ip.to_string();
    let run = || {
        xivo_ha_env(
            root.path(),
            &master.url(),
            &[
                ("XIVO_HA_ALERT_SMTP", &smtp.address()),
                ("XIVO_HA_ALERT_TO", "root@localhost"),
            ],
            &["db-replication", &slave_ip, "--target-db", &slave.url()],
        )
    };
    assert_success(&run());
    assert!(
        smtp.messages().is_empty(),
        "a first replication mails nothing"
    );
    // What users and an administrator did while the slave served.
    slave
        .client()
        .await
        .batch_execute(
            "UPDATE userfeatures SET enablednd = 1 WHERE id = 2;
             UPDATE extensions SET typeval = '42' WHERE exten = '1001'",
        )
        .await
        .unwrap();
    assert_success(&run());
    let mails = smtp.wait_messages(1, Duration::from_secs(10));
    let subject = mails[0].subject();
    assert!(
        subject.contains("After the failback: the slave's changes merged back or overwritten: the slave's changes to 2 tables were overwritten: extensions (1 row), userfeatures (1 row) (merged back: 1 user status)"),
        "{subject}"
    );
    let body = mails[0].body();
    assert!(
        body.contains("merged back: userfeatures id=2 enablednd: '1' (was '0')"),
        "{body}"
    );
    // The next run finds nothing more: no mail.
    assert_success(&run());
    assert_eq!(smtp.messages().len(), 1);
}
