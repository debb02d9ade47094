//! The merge-back of user statuses, its pure part: what is merged ([`USER_STATUSES`], extended
//! by `XIVO_HA_MERGE_BACK_EXTRA`), that list checked against the schema ([`resolve`]), and
//! the decision for each value ([`decide`]) from three versions of a table's merged columns:
//! the base (what the previous replication wrote on the slave, kept there by [`super::base`]),
//! the slave's current values and the master's.
//!
//! For each value of a row present in all three:
//! - the slave's equals the base: nothing changed on the slave, nothing to merge;
//! - the slave's differs and the master's equals the base: the slave's is merged back;
//! - both differ and are equal: nothing to do;
//! - both differ and differ from each other: a conflict, the master's value wins.
//!
//! A row new on the slave, deleted on the slave, or changed on the slave and deleted on the
//! master is not merged, and said so. No I/O here: [`super::base`] reads and writes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::tables::{Catalog, is_excluded};
use crate::context::Context;
use crate::settings::{ConfigError, from_env};
use crate::status::documents::{MergeConflict, MergedValue};

/// The statuses users switch from their phones or their client while the slave serves, merged
/// back into the master: table, its primary key as XiVO's schema has it, columns.
pub const USER_STATUSES: &[(&str, &[&str], &[&str])] = &[
    (
        "userfeatures",
        &["id"],
        &[
            "enablednd",       // do not disturb
            "enableunc",       // unconditional forward, and its destination
            "destunc",         //
            "enablerna",       // forward on no answer
            "destrna",         //
            "enablebusy",      // forward on busy
            "destbusy",        //
            "incallfilter",    // incoming call filtering
            "enablevoicemail", // voicemail on or off
            "enableonlinerec", // on-demand recording allowed
            "callrecord",      // call recording
        ],
    ),
    // Boss-secretary filters: a member switching its filter on or off.
    ("callfiltermember", &["id"], &["active"]),
];

/// The prefix of the merge-back's setting (`XIVO_HA_MERGE_BACK_EXTRA`).
pub const ENV_PREFIX: &str = "XIVO_HA_MERGE_BACK_";

/// The setting: `table.column` entries, separated by spaces or commas.
#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(default)]
    extra: Option<String>,
}

/// One table to merge: its columns, and the primary key it must have (none for a table only
/// the setting names: whatever primary key it has).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeSpec {
    pub table: String,
    pub key: Option<Vec<String>>,
    /// Columns with whether the setting named them (an error when missing, where a column of
    /// [`USER_STATUSES`] missing from an older schema is only skipped).
    pub columns: Vec<(String, bool)>,
}

/// What to merge back: [`USER_STATUSES`] and the setting's columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeList {
    pub tables: Vec<MergeSpec>,
}

impl Default for MergeList {
    fn default() -> Self {
        MergeList {
            tables: USER_STATUSES
                .iter()
                .map(|(table, key, columns)| MergeSpec {
                    table: table.to_string(),
                    key: Some(key.iter().map(|k| k.to_string()).collect()),
                    columns: columns.iter().map(|c| (c.to_string(), false)).collect(),
                })
                .collect(),
        }
    }
}

impl MergeList {
    /// [`USER_STATUSES`] with `XIVO_HA_MERGE_BACK_EXTRA` (environment over custom.env).
    pub fn load(ctx: &Context) -> Result<MergeList, ConfigError> {
        let env = ctx.env()?;
        let raw: Raw = from_env(ENV_PREFIX, &env)?;
        let mut list = MergeList::default();
        if let Some(text) = raw.extra {
            let variable = format!("{ENV_PREFIX}EXTRA");
            list.extend(&text)
                .map_err(|reason| env.variable_error(&variable, reason))?;
        }
        Ok(list)
    }

    /// Adds the `table.column` entries of `text`.
    pub fn extend(&mut self, text: &str) -> Result<(), String> {
        let identifier = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        for entry in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let Some((table, column)) = entry
                .split_once('.')
                .filter(|(t, c)| identifier(t) && identifier(c))
            else {
                return Err(format!(
                    "`{entry}` is not `table.column` (lower-case names, e.g. userfeatures.enablexfer)"
                ));
            };
            let index = match self.tables.iter().position(|s| s.table == table) {
                Some(i) => i,
                None => {
                    self.tables.push(MergeSpec {
                        table: table.to_owned(),
                        key: None,
                        columns: Vec::new(),
                    });
                    self.tables.len() - 1
                }
            };
            let spec = &mut self.tables[index];
            if !spec.columns.iter().any(|(c, _)| c == column) {
                spec.columns.push((column.to_owned(), true));
            }
        }
        Ok(())
    }
}

/// A table of the list as this schema has it: its primary key and the columns that exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub table: String,
    pub key: Vec<String>,
    pub columns: Vec<String>,
}

/// Why tables or columns of the list are not merged, by table.
pub type Notes = BTreeMap<String, Vec<String>>;

/// The list against the master's catalog (the guards made it the slave's too): the tables to
/// merge, and, by table, why a table or column is not merged. A table or column the setting
/// names that the schema lacks is an error (the setting's fix is named).
pub fn resolve(list: &MergeList, catalog: &Catalog) -> Result<(Vec<Resolved>, Notes), String> {
    let mut resolved = Vec::new();
    let mut notes = Notes::new();
    for spec in &list.tables {
        let table = &spec.table;
        let mut note = |text: String| notes.entry(table.clone()).or_default().push(text);
        if !catalog.tables.contains_key(table) || is_excluded(table) {
            if spec.columns.iter().any(|(_, from_setting)| *from_setting) {
                return Err(format!("`{table}` is not a replicated table"));
            }
            note(format!(
                "no merge for `{table}`: no such table in this schema"
            ));
            continue;
        }
        let Some(key) = catalog.primary_keys.get(table) else {
            note(format!("no merge for `{table}`: it has no primary key"));
            continue;
        };
        if let Some(expected) = &spec.key
            && expected != key
        {
            note(format!(
                "no merge for `{table}`: its primary key is ({}), not ({})",
                key.join(", "),
                expected.join(", ")
            ));
            continue;
        }
        let mut columns = Vec::new();
        for (column, from_setting) in &spec.columns {
            if catalog.column_type(table, column).is_some() && !key.contains(column) {
                columns.push(column.clone());
            } else if *from_setting {
                return Err(format!(
                    "`{table}.{column}` is not a column of `{table}` outside its primary key"
                ));
            } else {
                note(format!(
                    "no merge for `{table}.{column}`: no such column in this schema"
                ));
            }
        }
        if !columns.is_empty() {
            resolved.push(Resolved {
                table: table.clone(),
                key: key.clone(),
                columns,
            });
        }
    }
    Ok((resolved, notes))
}

/// A value as PostgreSQL prints it (`None`: NULL).
pub type Value = Option<String>;

/// The merged columns of a table's rows, by primary key (each key column as text).
pub type Rows = BTreeMap<Vec<String>, Vec<Value>>;

/// The base of one table: the columns recorded (in their order in [`Rows`]) and the rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Base {
    pub key: Vec<String>,
    pub columns: Vec<String>,
    pub rows: Rows,
}

/// One row's values to write into the master: `(column, value, was)`, `was` being the base
/// (the master's value, which the write checks it still is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowWrite {
    pub key: Vec<String>,
    pub values: Vec<(String, Value, Value)>,
}

/// The decision for one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableMerge {
    pub writes: Vec<RowWrite>,
    pub conflicts: Vec<MergeConflict>,
    /// Why rows or columns were not merged, one line each.
    pub skipped: Vec<String>,
}

/// How many row keys a note names before "...".
const KEYS_SHOWN: usize = 5;

/// `id=3` (`a=1, b=x`).
pub fn show_key(columns: &[String], values: &[String]) -> String {
    columns
        .iter()
        .zip(values)
        .map(|(c, v)| format!("{c}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values merged for `table` by `writes`, for the report.
pub fn merged_values(table: &Resolved, writes: &[RowWrite]) -> Vec<MergedValue> {
    writes
        .iter()
        .flat_map(|w| {
            w.values.iter().map(|(column, value, was)| MergedValue {
                table: table.table.clone(),
                key: show_key(&table.key, &w.key),
                column: column.clone(),
                value: value.clone(),
                was: was.clone(),
            })
        })
        .collect()
}

/// The decision for `table` (see the module): `slave` and `master` hold `table.columns` in
/// that order.
pub fn decide(table: &Resolved, base: &Base, slave: &Rows, master: &Rows) -> TableMerge {
    let mut out = TableMerge::default();
    let name = &table.table;
    // Where each merged column stands in the base (none: added to the list since).
    let in_base: Vec<Option<usize>> = table
        .columns
        .iter()
        .map(|c| base.columns.iter().position(|b| b == c))
        .collect();
    for (column, position) in table.columns.iter().zip(&in_base) {
        if position.is_none() {
            out.skipped.push(format!(
                "no merge for `{name}.{column}`: no base recorded for it yet (the next replication records it)"
            ));
        }
    }
    let mut new_on_slave = Vec::new();
    let mut gone_on_master = Vec::new();
    for (key, slave_values) in slave {
        let Some(base_values) = base.rows.get(key) else {
            new_on_slave.push(key);
            continue;
        };
        let changed: Vec<usize> = (0..table.columns.len())
            .filter(|&i| in_base[i].is_some_and(|b| base_values[b] != slave_values[i]))
            .collect();
        if changed.is_empty() {
            continue;
        }
        let Some(master_values) = master.get(key) else {
            gone_on_master.push(key);
            continue;
        };
        let mut write = RowWrite {
            key: key.clone(),
            values: Vec::new(),
        };
        for i in changed {
            let was = &base_values[in_base[i].expect("changed columns are in the base")];
            let (mine, theirs) = (&master_values[i], &slave_values[i]);
            if mine == was {
                write
                    .values
                    .push((table.columns[i].clone(), theirs.clone(), was.clone()));
            } else if mine != theirs {
                out.conflicts.push(MergeConflict {
                    table: name.clone(),
                    key: show_key(&table.key, key),
                    column: table.columns[i].clone(),
                    base: was.clone(),
                    master: mine.clone(),
                    slave: theirs.clone(),
                });
            }
        }
        if !write.values.is_empty() {
            out.writes.push(write);
        }
    }
    let gone_on_slave: Vec<&Vec<String>> = base
        .rows
        .keys()
        .filter(|k| !slave.contains_key(*k))
        .collect();
    for (rows, what) in [
        (new_on_slave, "new on the slave"),
        (gone_on_slave, "deleted on the slave"),
        (
            gone_on_master,
            "changed on the slave but deleted on the master",
        ),
    ] {
        if rows.is_empty() {
            continue;
        }
        let mut keys: Vec<String> = rows
            .iter()
            .take(KEYS_SHOWN)
            .map(|k| show_key(&table.key, k))
            .collect();
        if rows.len() > KEYS_SHOWN {
            keys.push("...".into());
        }
        out.skipped.push(format!(
            "no merge for {} row{} of `{name}` {what} ({}): the master's version is kept",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" },
            keys.join("; ")
        ));
    }
    out
}

/// The tables of `resolved` whose base must be (re)written after this run's copy: those
/// copied (the slave now holds new values) and those whose recorded base is missing or was
/// recorded for another key or other columns. `recorded` maps a table to its base's key and
/// columns.
pub fn bases_to_write<'a>(
    resolved: &'a [Resolved],
    recorded: &BTreeMap<String, (Vec<String>, Vec<String>)>,
    copied: &BTreeSet<String>,
) -> Vec<&'a Resolved> {
    resolved
        .iter()
        .filter(|r| {
            copied.contains(&r.table)
                || recorded.get(&r.table) != Some(&(r.key.clone(), r.columns.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::tables::Column;

    fn userfeatures() -> Resolved {
        Resolved {
            table: "userfeatures".into(),
            key: vec!["id".into()],
            columns: vec!["enablednd".into(), "destunc".into()],
        }
    }

    fn rows(entries: &[(&str, &[Option<&str>])]) -> Rows {
        entries
            .iter()
            .map(|(k, v)| {
                (
                    vec![k.to_string()],
                    v.iter().map(|x| x.map(str::to_owned)).collect(),
                )
            })
            .collect()
    }

    fn base(entries: &[(&str, &[Option<&str>])]) -> Base {
        Base {
            key: vec!["id".into()],
            columns: vec!["enablednd".into(), "destunc".into()],
            rows: rows(entries),
        }
    }

    #[test]
    fn the_slaves_change_is_merged_where_the_master_kept_the_base_else_the_master_wins() {
        let table = userfeatures();
        let base = base(&[
            ("1", &[Some("0"), Some("")]),
            ("2", &[Some("0"), Some("")]),
            ("3", &[Some("0"), None]),
        ]);
        let slave = rows(&[
            ("1", &[Some("1"), Some("")]),     // DND set on the slave
            ("2", &[Some("0"), Some("0611")]), // forward set on the slave...
            ("3", &[Some("1"), Some("42")]),   // both changed on both sides, one equal
        ]);
        let master = rows(&[
            ("1", &[Some("0"), Some("1002")]), // the master changed another column
            ("2", &[Some("0"), Some("0622")]), // ...and to another number on the master
            ("3", &[Some("1"), None]),
        ]);
        let merge = decide(&table, &base, &slave, &master);
        assert_eq!(
            merge.writes,
            vec![
                RowWrite {
                    key: vec!["1".into()],
                    values: vec![("enablednd".into(), Some("1".into()), Some("0".into()))],
                },
                RowWrite {
                    key: vec!["3".into()],
                    values: vec![("destunc".into(), Some("42".into()), None)],
                },
            ]
        );
        assert_eq!(
            merge.conflicts,
            vec![MergeConflict {
                table: "userfeatures".into(),
                key: "id=2".into(),
                column: "destunc".into(),
                base: Some(String::new()),
                master: Some("0622".into()),
                slave: Some("0611".into()),
            }]
        );
        assert!(merge.skipped.is_empty(), "{:?}", merge.skipped);
        let values = merged_values(&table, &merge.writes);
        assert_eq!(values.len(), 2);
        assert_eq!(values[1].key, "id=3");
        assert_eq!(values[1].was, None);
    }

    #[test]
    fn rows_deleted_or_new_on_one_side_are_not_merged_and_said_once() {
        let table = userfeatures();
        let base = base(&[
            ("1", &[Some("0"), Some("")]),
            ("2", &[Some("0"), Some("")]),
            ("3", &[Some("0"), Some("")]),
        ]);
        // 1: changed on the slave, deleted on the master; 2: deleted on the slave; 9: new.
        let slave = rows(&[
            ("1", &[Some("1"), Some("")]),
            ("3", &[Some("0"), Some("")]),
            ("9", &[Some("1"), Some("")]),
        ]);
        let master = rows(&[("2", &[Some("0"), Some("")]), ("3", &[Some("0"), Some("")])]);
        let merge = decide(&table, &base, &slave, &master);
        assert!(merge.writes.is_empty());
        assert!(merge.conflicts.is_empty());
        assert_eq!(
            merge.skipped,
            vec![
                "no merge for 1 row of `userfeatures` new on the slave (id=9): the master's version is kept",
                "no merge for 1 row of `userfeatures` deleted on the slave (id=2): the master's version is kept",
                "no merge for 1 row of `userfeatures` changed on the slave but deleted on the master (id=1): the master's version is kept",
            ]
        );
    }

    #[test]
    fn a_column_without_a_base_is_not_merged() {
        let table = userfeatures();
        let mut base = base(&[("1", &[Some("0")])]);
        base.columns = vec!["enablednd".into()];
        let slave = rows(&[("1", &[Some("1"), Some("0611")])]);
        let master = rows(&[("1", &[Some("0"), Some("")])]);
        let merge = decide(&table, &base, &slave, &master);
        assert_eq!(merge.writes.len(), 1);
        assert_eq!(merge.writes[0].values.len(), 1, "enablednd only");
        assert!(merge.skipped[0].contains("`userfeatures.destunc`: no base recorded"));
    }

    fn catalog() -> Catalog {
        let mut catalog = Catalog::default();
        let column = |name: &str| Column {
            name: name.into(),
            type_name: "integer".into(),
        };
        catalog.tables.insert(
            "userfeatures".into(),
            ["id", "enablednd", "enableunc", "destunc", "enablexfer"]
                .into_iter()
                .map(column)
                .collect(),
        );
        catalog.tables.insert("nopk".into(), vec![column("flag")]);
        catalog
            .tables
            .insert("cel".into(), vec![column("id"), column("flag")]);
        catalog
            .primary_keys
            .insert("userfeatures".into(), vec!["id".into()]);
        catalog.primary_keys.insert("cel".into(), vec!["id".into()]);
        catalog
    }

    #[test]
    fn the_list_is_checked_against_the_schema() {
        let mut list = MergeList::default();
        let (resolved, notes) = resolve(&list, &catalog()).unwrap();
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].columns, ["enablednd", "enableunc", "destunc"]);
        assert!(
            notes["userfeatures"]
                .iter()
                .any(|n| n.contains("`userfeatures.enableonlinerec`: no such column")),
            "{notes:?}"
        );
        assert!(notes["callfiltermember"][0].contains("no such table"));

        list.extend("userfeatures.enablexfer, nopk.flag").unwrap();
        let (resolved, notes) = resolve(&list, &catalog()).unwrap();
        assert!(resolved[0].columns.contains(&"enablexfer".to_owned()));
        assert_eq!(
            notes["nopk"],
            ["no merge for `nopk`: it has no primary key"]
        );

        for (bad, error) in [
            ("userfeatures.nope", "`userfeatures.nope` is not a column"),
            ("userfeatures.id", "outside its primary key"),
            ("cel.flag", "`cel` is not a replicated table"),
            ("missing.flag", "`missing` is not a replicated table"),
        ] {
            let mut list = MergeList::default();
            list.extend(bad).unwrap();
            let e = resolve(&list, &catalog()).unwrap_err();
            assert!(e.contains(error), "{bad}: {e}");
        }
        for bad in ["userfeatures", "a.b.c", "User.x", ".x"] {
            assert!(MergeList::default().extend(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_primary_key_other_than_the_lists_means_no_merge() {
        let mut catalog = catalog();
        catalog
            .primary_keys
            .insert("userfeatures".into(), vec!["uuid".into()]);
        let (resolved, notes) = resolve(&MergeList::default(), &catalog).unwrap();
        assert!(resolved.is_empty());
        assert!(notes["userfeatures"][0].contains("its primary key is (uuid), not (id)"));
    }

    #[test]
    fn bases_are_written_for_copied_tables_and_stale_records() {
        let resolved = vec![userfeatures()];
        let mut recorded = BTreeMap::new();
        assert_eq!(
            bases_to_write(&resolved, &recorded, &BTreeSet::new()).len(),
            1
        );
        recorded.insert(
            "userfeatures".to_owned(),
            (resolved[0].key.clone(), resolved[0].columns.clone()),
        );
        assert!(bases_to_write(&resolved, &recorded, &BTreeSet::new()).is_empty());
        let copied: BTreeSet<String> = ["userfeatures".to_owned()].into();
        assert_eq!(bases_to_write(&resolved, &recorded, &copied).len(), 1);
        recorded.get_mut("userfeatures").unwrap().1.pop();
        assert_eq!(
            bases_to_write(&resolved, &recorded, &BTreeSet::new()).len(),
            1
        );
    }

    #[test]
    fn the_setting_is_the_catalogs() {
        use crate::settings::catalog::{Component, check_struct};
        check_struct::<Raw>(Component::Replication, ENV_PREFIX, &[]);
    }
}
