//! What the replication copies: XiVO's list of excluded tables (the one constant), and the
//! catalog of one side (tables of the `public` schema with their columns, sequences and who owns
//! them, foreign keys, primary keys) read from `pg_catalog` so that both sides can be compared and copied.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::GenericClient;

/// Tables of the `public` schema that are never copied to the slave, as in XiVO's
/// `xivo-master-slave-db-replication` (their id sequences are skipped as well):
/// - call events and statistics, which each node writes for itself (call_log,
///   call_log_participant, cel, queue_log, stat_*);
/// - web sessions (session);
/// - the network configuration except DHCP: interfaces, resolver, mail (netiface, resolvconf,
///   mail): each node has its own addresses and name;
/// - the support configuration (monitoring).
///
/// `dhcp` is deliberately NOT here: both nodes sit on the same VoIP network and the slave must
/// serve the same pool when it takes over.
pub const EXCLUDED_TABLES: &[&str] = &[
    "call_log",
    "call_log_participant",
    "cel",
    "queue_log",
    "session",
    "stat_agent",
    "stat_agent_periodic",
    "stat_call_on_queue",
    "stat_queue",
    "stat_queue_periodic",
    "mail",
    "monitoring",
    "netiface",
    "resolvconf",
];

/// Whether `table` (of the public schema) is left alone on the slave.
pub fn is_excluded(table: &str) -> bool {
    EXCLUDED_TABLES.contains(&table)
}

/// One column as COPY sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type()`: binary COPY needs identical types on both sides.
    pub type_name: String,
}

/// The public schema of one database, as far as replication cares.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Ordinary (and partitioned-leaf) tables by name, with their copyable columns in order.
    pub tables: BTreeMap<String, Vec<Column>>,
    /// Sequences by name, with the table that owns them (serial/identity), if any.
    pub sequences: BTreeMap<String, Option<String>>,
    /// Foreign keys: (referencing table, referenced table).
    pub foreign_keys: BTreeSet<(String, String)>,
    /// Enum types by name (as `format_type` writes them in [`Column::type_name`]), with their
    /// labels in order.
    pub enums: BTreeMap<String, Vec<String>>,
    /// The primary key's columns of each table that has one, in the key's order (the merge-back
    /// identifies rows by it).
    pub primary_keys: BTreeMap<String, Vec<String>>,
}

impl Catalog {
    pub async fn read(client: &impl GenericClient) -> Result<Catalog, tokio_postgres::Error> {
        let mut catalog = Catalog::default();
        // Five queries in flight at once on the connection (pipelined), each in one round trip.
        // Generated columns cannot be written by COPY and are recomputed by the slave.
        let (columns, sequences, foreign_keys, enums, primary_keys) = tokio::join!(
            client.query_typed(
                "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
                      AND NOT a.attisdropped AND a.attgenerated = ''
                 WHERE n.nspname = 'public' AND c.relkind = 'r'
                 ORDER BY c.relname, a.attnum",
                &[],
            ),
            client.query_typed(
                "SELECT s.relname::text, owner.relname::text
                 FROM pg_class s
                 JOIN pg_namespace n ON n.oid = s.relnamespace
                 LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
                      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                 LEFT JOIN pg_class owner ON owner.oid = d.refobjid
                 WHERE n.nspname = 'public' AND s.relkind = 'S'
                 ORDER BY s.relname",
                &[],
            ),
            client.query_typed(
                "SELECT DISTINCT src.relname::text, dst.relname::text
                 FROM pg_constraint k
                 JOIN pg_class src ON src.oid = k.conrelid
                 JOIN pg_class dst ON dst.oid = k.confrelid
                 JOIN pg_namespace n ON n.oid = src.relnamespace
                 WHERE k.contype = 'f' AND n.nspname = 'public'",
                &[],
            ),
            client.query_typed(
                "SELECT format_type(t.oid, NULL), e.enumlabel::text
                 FROM pg_type t
                 JOIN pg_enum e ON e.enumtypid = t.oid
                 JOIN pg_namespace n ON n.oid = t.typnamespace
                 WHERE n.nspname = 'public'
                 ORDER BY t.typname, e.enumsortorder",
                &[],
            ),
            client.query_typed(
                "SELECT c.relname::text, a.attname::text
                 FROM pg_constraint k
                 JOIN pg_class c ON c.oid = k.conrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u(attnum, position)
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum
                 WHERE k.contype = 'p' AND n.nspname = 'public'
                 ORDER BY c.relname, u.position",
                &[],
            ),
        );
        let rows = columns?;
        for row in rows {
            let table: String = row.get(0);
            let columns = catalog.tables.entry(table).or_default();
            if let Some(name) = row.get::<_, Option<String>>(1) {
                columns.push(Column {
                    name,
                    type_name: row.get(2),
                });
            }
        }
        let rows = sequences?;
        for row in rows {
            catalog.sequences.insert(row.get(0), row.get(1));
        }
        let rows = foreign_keys?;
        for row in rows {
            catalog.foreign_keys.insert((row.get(0), row.get(1)));
        }
        for row in enums? {
            catalog
                .enums
                .entry(row.get(0))
                .or_default()
                .push(row.get(1));
        }
        for row in primary_keys? {
            catalog
                .primary_keys
                .entry(row.get(0))
                .or_default()
                .push(row.get(1));
        }
        Ok(catalog)
    }

    /// The tables to replicate, by name.
    pub fn copied_tables(&self) -> Vec<&str> {
        self.tables
            .keys()
            .map(String::as_str)
            .filter(|t| !is_excluded(t))
            .collect()
    }

    /// The type of `table.column` as `format_type` writes it, if both exist.
    pub fn column_type(&self, table: &str, column: &str) -> Option<&str> {
        self.tables
            .get(table)?
            .iter()
            .find(|c| c.name == column)
            .map(|c| c.type_name.as_str())
    }

    /// The sequences to replicate: every sequence of the public schema except those of the
    /// excluded tables (owned by them, or named `<table>_id_seq` as in XiVO's list).
    pub fn copied_sequences(&self) -> Vec<&str> {
        self.sequences
            .iter()
            .filter(|(name, owner)| {
                let owned_by_excluded = owner.as_deref().is_some_and(is_excluded);
                let named_after_excluded = name.strip_suffix("_id_seq").is_some_and(is_excluded);
                !owned_by_excluded && !named_after_excluded
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// `name` as a quoted SQL identifier of the public schema.
pub fn qualified(name: &str) -> String {
    format!("public.{}", quote_ident(name))
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `name` as a SQL string literal.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `("a", "b", ...)`: the column list of a COPY.
pub fn column_list(columns: &[Column]) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    format!("({})", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_of_excluded_tables_are_skipped() {
        let mut catalog = Catalog::default();
        catalog
            .sequences
            .insert("cel_id_seq".into(), Some("cel".into()));
        catalog.sequences.insert("queue_log_id_seq".into(), None);
        catalog
            .sequences
            .insert("dhcp_id_seq".into(), Some("dhcp".into()));
        catalog.sequences.insert("standalone".into(), None);
        assert_eq!(
            catalog.copied_sequences(),
            vec!["dhcp_id_seq", "standalone"]
        );
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(qualified("we\"ird"), "public.\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
