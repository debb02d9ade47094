//! Environment settings: what xivo-ha reads from the site file (XiVO CC's custom.env) and the
//! process environment. [`catalog`] declares every variable (name, default, help, reader) and
//! generates env/custom.env and docs/settings.md; [`env_file`] parses the file and deserialises
//! each component's typed settings from it (environment over file); this module checks a site
//! file's names against the catalog.

pub mod catalog;
pub mod command;
pub mod env_file;

pub use env_file::{ConfigError, Duplicate, EnvEntry, EnvFile, SettingsError, differing, from_env};

/// What is wrong but harmless in a site file, one line each, for a warning: names that look like
/// ours but are not declared (with the closest declared one), and names given twice.
pub fn site_file_warnings(file: &EnvFile) -> Vec<String> {
    let path = file.path.display();
    let mut warnings: Vec<String> = file
        .entries
        .iter()
        .filter_map(|(name, entry)| {
            catalog::unknown(name).map(|unknown| format!("{path} line {}: {unknown}", entry.line))
        })
        .collect();
    warnings.extend(file.duplicates.iter().map(|d| {
        format!(
            "{path}: `{}` is given twice, on lines {} and {}: the later one applies",
            d.name, d.first_line, d.line
        )
    }));
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn warns_about_unknown_and_repeated_names() {
        let file = EnvFile::parse(
            Path::new("/etc/docker/xivo/custom.env"),
            "XUC_HOST=x\nDB_REPLIC_ORIGN=a\nIS_HA_SLAVE=false\nIS_HA_SLAVE=true\nDB_REPLIC_ORIGIN=b\n",
        )
        .unwrap();
        assert_eq!(
            site_file_warnings(&file),
            vec![
                "/etc/docker/xivo/custom.env line 2: unknown setting `DB_REPLIC_ORIGN`: \
                 did you mean `DB_REPLIC_ORIGIN`?",
                "/etc/docker/xivo/custom.env: `IS_HA_SLAVE` is given twice, on lines 3 and 4: \
                 the later one applies",
            ]
        );
        assert_eq!(file.entries["IS_HA_SLAVE"].value, "true");
    }

    #[test]
    fn the_shipped_custom_env_gives_no_warning() {
        let file = EnvFile::parse(Path::new("custom.env"), &catalog::custom_env()).unwrap();
        assert_eq!(site_file_warnings(&file), Vec::<String>::new());
    }
}
