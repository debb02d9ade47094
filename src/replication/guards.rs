//! The checks made before the slave is touched: the database encoding (UTF-8 on both sides),
//! source and target not being the same database, and the schema comparison (XiVO's
//! `alembic_version`, then tables, columns, the labels of their enum types and sequences), each
//! naming the first difference.

use tokio_postgres::GenericClient;

use super::ReplicationError;
use super::tables::{Catalog, is_excluded};

/// Facts about one side that the guards compare.
#[derive(Clone, Debug)]
pub struct Identity {
    pub encoding: String,
    /// Same database oid, same postmaster start time: the very same database.
    pub database_oid: u32,
    pub started: String,
    /// `alembic_version.version_num`, `None` when the table is missing or empty.
    pub schema_version: Option<String>,
}

impl Identity {
    pub async fn read(client: &impl GenericClient) -> Result<Identity, tokio_postgres::Error> {
        let row = client
            .query_typed(
                "SELECT pg_encoding_to_char(d.encoding)::text, d.oid, pg_postmaster_start_time()::text,
                        to_regclass('public.alembic_version') IS NOT NULL
                 FROM pg_database d WHERE d.datname = current_database()",
                &[],
            )
            .await?
            .into_iter()
            .next()
            .expect("the current database is in pg_database");
        let has_alembic: bool = row.get(3);
        let schema_version = if has_alembic {
            client
                .query_typed(
                    "SELECT version_num::text FROM public.alembic_version ORDER BY 1 LIMIT 1",
                    &[],
                )
                .await?
                .first()
                .map(|r| r.get(0))
        } else {
            None
        };
        Ok(Identity {
            encoding: row.get(0),
            database_oid: row.get(1),
            started: row.get(2),
            schema_version,
        })
    }
}

/// Refuses a database whose encoding is not UTF-8 (`side` is "master" or "slave").
pub fn check_encoding(side: &str, target: &str, id: &Identity) -> Result<(), ReplicationError> {
    if id.encoding == "UTF8" {
        return Ok(());
    }
    Err(ReplicationError::Encoding {
        side: side.to_owned(),
        target: target.to_owned(),
        encoding: id.encoding.clone(),
    })
}

/// Refuses to replicate a database into itself (it would truncate the data it is reading).
pub fn check_distinct(master: &Identity, slave: &Identity) -> Result<(), ReplicationError> {
    if master.database_oid == slave.database_oid && master.started == slave.started {
        return Err(ReplicationError::SameDatabase);
    }
    Ok(())
}

/// Compares the two schemas and names the first difference, in the order an administrator
/// would look: schema version, then each replicated table and its columns, then sequences.
pub fn compare_schemas(
    master_id: &Identity,
    slave_id: &Identity,
    master: &Catalog,
    slave: &Catalog,
) -> Result<(), ReplicationError> {
    let mismatch = |detail: String| Err(ReplicationError::SchemaMismatch { detail });
    if master_id.schema_version != slave_id.schema_version {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_owned());
        return mismatch(format!(
            "schema version (alembic_version) {} on the master, {} on the slave",
            show(&master_id.schema_version),
            show(&slave_id.schema_version)
        ));
    }
    let names: std::collections::BTreeSet<&String> =
        master.tables.keys().chain(slave.tables.keys()).collect();
    for table in names.into_iter().filter(|t| !is_excluded(t)) {
        let (m, s) = match (master.tables.get(table), slave.tables.get(table)) {
            (Some(m), Some(s)) => (m, s),
            (Some(_), None) => {
                return mismatch(format!(
                    "table `{table}` exists on the master, not on the slave"
                ));
            }
            (None, Some(_)) => {
                return mismatch(format!(
                    "table `{table}` exists on the slave, not on the master"
                ));
            }
            (None, None) => unreachable!("the name came from one side"),
        };
        for column in m {
            match s.iter().find(|c| c.name == column.name) {
                None => {
                    return mismatch(format!(
                        "column `{table}.{}` exists on the master, not on the slave",
                        column.name
                    ));
                }
                Some(other) if other.type_name != column.type_name => {
                    return mismatch(format!(
                        "column `{table}.{}` is {} on the master, {} on the slave",
                        column.name, column.type_name, other.type_name
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = s.iter().find(|c| !m.iter().any(|x| x.name == c.name)) {
            return mismatch(format!(
                "column `{table}.{}` exists on the slave, not on the master",
                extra.name
            ));
        }
    }
    if let Some(detail) = enum_difference(master, slave) {
        return mismatch(detail);
    }
    let master_sequences = master.copied_sequences();
    let slave_sequences = slave.copied_sequences();
    if let Some(missing) = master_sequences
        .iter()
        .find(|s| !slave_sequences.contains(s))
    {
        return mismatch(format!(
            "sequence `{missing}` exists on the master, not on the slave"
        ));
    }
    if let Some(extra) = slave_sequences
        .iter()
        .find(|s| !master_sequences.contains(s))
    {
        return mismatch(format!(
            "sequence `{extra}` exists on the slave, not on the master"
        ));
    }
    Ok(())
}

/// The first enum type of a replicated column whose labels differ between the two sides
/// (a label the slave lacks fails the copy), named with the labels that differ.
fn enum_difference(master: &Catalog, slave: &Catalog) -> Option<String> {
    let used: std::collections::BTreeSet<&str> = master
        .tables
        .iter()
        .filter(|(table, _)| !is_excluded(table))
        .flat_map(|(_, columns)| columns)
        .map(|column| column.type_name.trim_end_matches("[]"))
        .collect();
    for (name, labels) in master
        .enums
        .iter()
        .filter(|(n, _)| used.contains(n.as_str()))
    {
        let others = slave.enums.get(name).map(Vec::as_slice).unwrap_or_default();
        if labels == others {
            continue;
        }
        let only = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter()
                .filter(|l| !b.contains(l))
                .map(|l| format!("'{l}'"))
                .collect()
        };
        let (master_only, slave_only) = (only(labels, others), only(others, labels));
        let mut parts = Vec::new();
        if !master_only.is_empty() {
            parts.push(format!("{} only on the master", master_only.join(", ")));
        }
        if !slave_only.is_empty() {
            parts.push(format!("{} only on the slave", slave_only.join(", ")));
        }
        if parts.is_empty() {
            parts.push(format!(
                "in the order {} on the master, {} on the slave",
                labels.join(", "),
                others.join(", ")
            ));
        }
        return Some(format!(
            "enum type `{name}` has labels {}",
            parts.join(", ")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::tables::Column;

    fn id(version: &str) -> Identity {
        Identity {
            encoding: "UTF8".into(),
            database_oid: 1,
            started: "t".into(),
            schema_version: Some(version.into()),
        }
    }

    fn catalog(tables: &[(&str, &[(&str, &str)])]) -> Catalog {
        let mut catalog = Catalog::default();
        for (table, columns) in tables {
            catalog.tables.insert(
                table.to_string(),
                columns
                    .iter()
                    .map(|(n, t)| Column {
                        name: n.to_string(),
                        type_name: t.to_string(),
                    })
                    .collect(),
            );
        }
        catalog
    }

    #[test]
    fn names_the_first_difference() {
        let base = catalog(&[("userfeatures", &[("id", "integer"), ("firstname", "text")])]);
        assert!(compare_schemas(&id("a"), &id("a"), &base, &base).is_ok());
        let error = compare_schemas(&id("a"), &id("b"), &base, &base).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("a on the master, b on the slave"),
            "{error}"
        );

        let retyped = catalog(&[(
            "userfeatures",
            &[("id", "integer"), ("firstname", "varchar(3)")],
        )]);
        let error = compare_schemas(&id("a"), &id("a"), &base, &retyped).unwrap_err();
        assert!(
            error.to_string().contains(
                "`userfeatures.firstname` is text on the master, varchar(3) on the slave"
            ),
            "{error}"
        );

        let extra = catalog(&[(
            "userfeatures",
            &[("id", "integer"), ("firstname", "text"), ("x", "int")],
        )]);
        let error = compare_schemas(&id("a"), &id("a"), &base, &extra).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`userfeatures.x` exists on the slave"),
            "{error}"
        );

        let missing = catalog(&[]);
        let error = compare_schemas(&id("a"), &id("a"), &base, &missing).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("table `userfeatures` exists on the master, not on the slave"),
            "{error}"
        );
    }

    #[test]
    fn enum_labels_are_compared() {
        let mut master = catalog(&[("userfeatures", &[("id", "integer"), ("mood", "mood")])]);
        master
            .enums
            .insert("mood".into(), vec!["sad".into(), "happy".into()]);
        let mut slave = master.clone();
        assert!(compare_schemas(&id("a"), &id("a"), &master, &slave).is_ok());
        slave
            .enums
            .insert("mood".into(), vec!["sad".into(), "ok".into()]);
        let error = compare_schemas(&id("a"), &id("a"), &master, &slave).unwrap_err();
        assert!(
            error.to_string().contains(
                "enum type `mood` has labels 'happy' only on the master, 'ok' only on the slave"
            ),
            "{error}"
        );
        slave
            .enums
            .insert("mood".into(), vec!["happy".into(), "sad".into()]);
        let error = compare_schemas(&id("a"), &id("a"), &master, &slave).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("in the order sad, happy on the master, happy, sad on the slave"),
            "{error}"
        );
        // An enum no replicated column uses may differ.
        master.tables.get_mut("userfeatures").unwrap().pop();
        slave.tables.get_mut("userfeatures").unwrap().pop();
        assert!(compare_schemas(&id("a"), &id("a"), &master, &slave).is_ok());
    }

    #[test]
    fn excluded_tables_may_differ() {
        let master = catalog(&[("cel", &[("id", "integer")])]);
        let slave = catalog(&[("cel", &[("id", "bigint")]), ("netiface", &[])]);
        assert!(compare_schemas(&id("a"), &id("a"), &master, &slave).is_ok());
    }
}
