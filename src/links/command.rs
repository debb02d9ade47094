//! `xivo-ha install-links DIR`: creates XiVO's classic command names in DIR as links to this
//! binary; a second run finds them in place and changes nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{LINKS, LinksError};
use crate::fsutil::FileError;

#[derive(Debug, Args)]
pub struct InstallLinksArgs {
    /// Where to create the links (e.g. /usr/sbin).
    pub dir: PathBuf,
    /// Replace files of the same name that are not already links to this binary.
    #[arg(long)]
    pub force: bool,
}

/// `xivo-ha install-links DIR [--force]`.
pub fn install(args: &InstallLinksArgs) -> Result<ExitCode, LinksError> {
    let exe = std::env::current_exe().map_err(LinksError::OwnPath)?;
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| FileError::new("create directory", &args.dir, e))?;
    for link in LINKS {
        let path = args.dir.join(link.name);
        match std::fs::read_link(&path) {
            Ok(target) if target == exe => {
                println!("{} already links to {}", path.display(), exe.display());
                continue;
            }
            Ok(_) | Err(_) if path.symlink_metadata().is_ok() => {
                if !args.force {
                    return Err(LinksError::Exists {
                        link: path,
                        exe: exe.clone(),
                    });
                }
                std::fs::remove_file(&path).map_err(|e| FileError::new("remove", &path, e))?;
            }
            _ => {}
        }
        std::os::unix::fs::symlink(&exe, &path)
            .map_err(|e| FileError::new("create link", &path, e))?;
        println!("{} -> {}", path.display(), exe.display());
    }
    Ok(ExitCode::SUCCESS)
}
