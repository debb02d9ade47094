//! What DB Replic writes to Elasticsearch: one index per event table (names configurable,
//! defaults `cel` and `queue_log`), documents with `_id = <origin>-<table>-<id>` so that a
//! replay overwrites instead of duplicating, and an index template per index (timestamps as
//! dates, ids and integers as longs, text as keywords).

use std::io::Write;

use serde_json::{Value, json};

use crate::dbreplic::source::{Cell, EventTable, Kind, SourceRow};

/// The document id of a row: unique across both HA nodes and both tables.
pub fn document_id(origin: &str, table: EventTable, id: i64) -> String {
    format!("{origin}-{}-{id}", table.name())
}

/// The name of DB Replic's index template for `index`.
pub fn template_name(index: &str) -> String {
    format!("xivo-ha-dbreplic-{index}")
}

/// The index template: applied when the index is created (an existing index keeps its mapping).
pub fn template_body(table: EventTable, index: &str) -> Value {
    let mut properties = serde_json::Map::new();
    properties.insert("origin".into(), json!({"type": "keyword"}));
    properties.insert("id".into(), json!({"type": "long"}));
    for (name, kind) in table.columns() {
        let mapping = match kind {
            Kind::Int => json!({"type": "long"}),
            Kind::Text => json!({"type": "keyword", "ignore_above": 1024}),
            Kind::Timestamp => json!({"type": "date"}),
            // queue_log.time is text in XiVO ("2024-01-31 10:00:00.123456"); a malformed value
            // is kept in _source instead of rejecting the whole document.
            Kind::DateText => json!({
                "type": "date",
                "format": "yyyy-MM-dd HH:mm:ss.SSSSSS||yyyy-MM-dd HH:mm:ss||strict_date_optional_time||epoch_millis",
                "ignore_malformed": true
            }),
        };
        properties.insert((*name).into(), mapping);
    }
    json!({
        "index_patterns": [index],
        "priority": 200,
        "template": {"mappings": {"properties": properties}},
        "_meta": {"managed_by": "xivo-ha db-replic"}
    })
}

/// Appends the `index` action line and the document line of `row` to `out` (NDJSON).
pub fn write_bulk_item(
    out: &mut Vec<u8>,
    index: &str,
    origin: &str,
    table: EventTable,
    row: &SourceRow,
) {
    let string = |out: &mut Vec<u8>, s: &str| {
        serde_json::to_writer(&mut *out, s).expect("strings serialise");
    };
    out.extend_from_slice(b"{\"index\":{\"_index\":");
    string(out, index);
    out.extend_from_slice(b",\"_id\":");
    string(out, &document_id(origin, table, row.id));
    out.extend_from_slice(b"}}\n{\"origin\":");
    string(out, origin);
    let _ = write!(out, ",\"id\":{}", row.id);
    for ((name, _), cell) in table.columns().iter().zip(&row.cells) {
        let _ = write!(out, ",\"{name}\":");
        match cell {
            Cell::Int(Some(v)) => {
                let _ = write!(out, "{v}");
            }
            Cell::Text(Some(v)) => string(out, v),
            Cell::Timestamp(Some(v)) => {
                let _ = write!(out, "\"{}\"", v.format("%Y-%m-%dT%H:%M:%S%.f"));
            }
            Cell::Int(None) | Cell::Text(None) | Cell::Timestamp(None) => {
                out.extend_from_slice(b"null")
            }
        }
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_lines_are_json_with_stable_ids() {
        let row = SourceRow {
            id: 42,
            cells: vec![
                Cell::Text(Some("ENTERQUEUE \"x\"".into())),
                Cell::Text(None),
                Cell::Text(Some("q1".into())),
                Cell::Text(Some("NONE".into())),
                Cell::Text(Some("ENTERQUEUE".into())),
                Cell::Text(Some("".into())),
                Cell::Text(None),
                Cell::Text(None),
                Cell::Text(None),
                Cell::Text(None),
            ],
        };
        let mut out = Vec::new();
        write_bulk_item(&mut out, "queue_log", "xivo-a", EventTable::QueueLog, &row);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["index"]["_id"], "xivo-a-queue_log-42");
        assert_eq!(lines[1]["id"], 42);
        assert_eq!(lines[1]["time"], "ENTERQUEUE \"x\"");
        assert_eq!(lines[1]["callid"], Value::Null);
    }

    #[test]
    fn templates_map_dates_and_longs() {
        let t = template_body(EventTable::Cel, "cel");
        let p = &t["template"]["mappings"]["properties"];
        assert_eq!(p["eventtime"]["type"], "date");
        assert_eq!(p["id"]["type"], "long");
        assert_eq!(p["call_log_id"]["type"], "long");
    }
}
