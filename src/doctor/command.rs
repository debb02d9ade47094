//! `xivo-ha doctor [--json]`: prints the report of [`super::run`] and saves it as `doctor.json`
//! (for `status` and the dashboard: an unwritable state directory is a warning on stderr, the
//! report is printed all the same); exit 1 when a check failed. It never fails itself: what it
//! cannot check is a failed finding.

use std::process::ExitCode;

use clap::Args;

use crate::context::Context;
use crate::status::documents::Component;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `xivo-ha doctor`.
pub async fn run(ctx: &Context, args: DoctorArgs) -> ExitCode {
    let report = super::run(ctx).await;
    let doc = report.document(chrono::Utc::now());
    if let Err(e) = crate::status::store::save(&ctx.paths, Component::Doctor, &doc) {
        eprintln!("warning: the report is not kept for the dashboard: {e}");
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        for finding in &report.findings {
            println!("{}", finding.render());
        }
    }
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
