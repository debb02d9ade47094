//! `xivo-ha settings` (hidden): prints the files generated from the catalog, to regenerate them:
//! `cargo run -q -- settings --custom-env > env/custom.env` and `--markdown > docs/settings.md`.

use std::process::ExitCode;

use clap::Args;

use super::catalog;

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SettingsArgs {
    /// env/custom.env: every setting with its default and a comment.
    #[arg(long)]
    pub custom_env: bool,
    /// docs/settings.md: one table per component.
    #[arg(long)]
    pub markdown: bool,
}

pub fn run(args: &SettingsArgs) -> ExitCode {
    let text = if args.markdown {
        catalog::markdown()
    } else {
        catalog::custom_env()
    };
    print!("{text}");
    ExitCode::SUCCESS
}
