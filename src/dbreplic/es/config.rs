//! What DB Replic writes to Elasticsearch: one index per event table (names configurable,
//! defaults `cel` and `queue_log`), documents with `_id = <origin>-<table>-<id>` so that a
//! replay overwrites instead of duplicating, and an index template per index (timestamps as
//! dates, ids and integers as longs, text as keywords).

use std::io::Write;

use serde_json::{Value, json};

use crate::dbreplic::source::{Cell, EventTable, Kind};

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

/// Writes rows of one table as `_bulk` NDJSON (an `index` action line and a document line
/// each) for one index and origin, with everything that does not change from row to row
/// (the action's start, the escaped origin and index, the field names) made once.
pub struct BulkWriter {
    /// `{"index":{"_index":<index>,"_id":"<origin>-<table>-` (the escaped origin's and
    /// table's text, without the closing quote: the id and `"` follow).
    action: Vec<u8>,
    /// `}}` and the document's start, up to `"id":`.
    document: Vec<u8>,
    /// `,"<name>":` per column.
    keys: Vec<Vec<u8>>,
}

impl BulkWriter {
    pub fn new(index: &str, origin: &str, table: EventTable) -> BulkWriter {
        let json = |s: &str| serde_json::to_vec(s).expect("strings serialise");
        let mut action = b"{\"index\":{\"_index\":".to_vec();
        action.extend_from_slice(&json(index));
        action.extend_from_slice(b",\"_id\":");
        let id_prefix = json(&format!("{origin}-{}-", table.name()));
        // Without its closing quote: the digits of the id need no escaping.
        action.extend_from_slice(&id_prefix[..id_prefix.len() - 1]);
        let mut document = b"\"}}\n{\"origin\":".to_vec();
        document.extend_from_slice(&json(origin));
        document.extend_from_slice(b",\"id\":");
        let keys = table
            .columns()
            .iter()
            .map(|(name, _)| {
                let mut key = b",".to_vec();
                key.extend_from_slice(&json(name));
                key.push(b':');
                key
            })
            .collect();
        BulkWriter {
            action,
            document,
            keys,
        }
    }

    /// Appends the action line and the document line of the row `id` with `cells` (in
    /// [`EventTable::columns`] order).
    pub fn write<'a>(&self, out: &mut Vec<u8>, id: i64, cells: impl Iterator<Item = Cell<'a>>) {
        let mut digits = [0; 20];
        out.extend_from_slice(&self.action);
        out.extend_from_slice(format_i64(&mut digits, id));
        out.extend_from_slice(&self.document);
        out.extend_from_slice(format_i64(&mut digits, id));
        for (key, cell) in self.keys.iter().zip(cells) {
            out.extend_from_slice(key);
            match cell {
                Cell::Int(Some(v)) => out.extend_from_slice(format_i64(&mut digits, v)),
                Cell::Text(Some(v)) => {
                    serde_json::to_writer(&mut *out, v).expect("strings serialise")
                }
                Cell::Timestamp(Some(v)) => {
                    out.push(b'"');
                    let _ = write!(out, "{}", v.format("%Y-%m-%dT%H:%M:%S%.f"));
                    out.push(b'"');
                }
                Cell::Int(None) | Cell::Text(None) | Cell::Timestamp(None) => {
                    out.extend_from_slice(b"null")
                }
            }
        }
        out.extend_from_slice(b"}\n");
    }
}

/// `v` in decimal, written at the end of `buffer`.
fn format_i64(buffer: &mut [u8; 20], v: i64) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        at -= 1;
        buffer[at] = b'-';
    }
    &buffer[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each NDJSON line of `out`, parsed.
    fn parsed(out: Vec<u8>) -> Vec<Value> {
        let text = String::from_utf8(out).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn bulk_lines_are_json_with_stable_ids() {
        let cells = [
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
        ];
        let mut out = Vec::new();
        BulkWriter::new("queue_log", "xivo-a", EventTable::QueueLog).write(
            &mut out,
            42,
            cells.into_iter(),
        );
        let lines = parsed(out);
        assert_eq!(lines[0]["index"]["_id"], "xivo-a-queue_log-42");
        assert_eq!(lines[1]["id"], 42);
        assert_eq!(lines[1]["time"], "ENTERQUEUE \"x\"");
        assert_eq!(lines[1]["callid"], Value::Null);
    }

    #[test]
    fn numbers_dates_and_escaped_names_are_written_as_json() {
        let time = chrono::NaiveDate::from_ymd_opt(2024, 1, 31)
            .unwrap()
            .and_hms_micro_opt(10, 0, 5, 123_400)
            .unwrap();
        let mut cells = vec![Cell::Text(Some("HANGUP")), Cell::Timestamp(Some(time))];
        cells.extend(std::iter::repeat_n(Cell::Text(None), 11));
        cells.push(Cell::Int(Some(-3)));
        cells.extend(std::iter::repeat_n(Cell::Text(None), 7));
        cells.push(Cell::Int(None));
        let mut out = Vec::new();
        let writer = BulkWriter::new("cel\"x", "node \"a\"", EventTable::Cel);
        writer.write(&mut out, 1_234_567_890_123, cells.into_iter());
        let lines = parsed(out);
        assert_eq!(lines[0]["index"]["_index"], "cel\"x");
        assert_eq!(
            lines[0]["index"]["_id"],
            document_id("node \"a\"", EventTable::Cel, 1_234_567_890_123)
        );
        assert_eq!(lines[1]["origin"], "node \"a\"");
        assert_eq!(lines[1]["id"], 1_234_567_890_123_i64);
        assert_eq!(lines[1]["eventtime"], "2024-01-31T10:00:05.123400");
        assert_eq!(lines[1]["amaflags"], -3);
        assert_eq!(lines[1]["call_log_id"], Value::Null);
        let mut digits = [0; 20];
        assert_eq!(format_i64(&mut digits, i64::MIN), b"-9223372036854775808");
        assert_eq!(format_i64(&mut digits, 0), b"0");
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
