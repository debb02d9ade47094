//! What a person at a terminal sees while a replication runs: one line per table (rows, bytes,
//! seconds), a live byte counter while a large table streams, and the one-line summary at the
//! end. Off a terminal (cron, the monitor) nothing but the summary is printed by the command.

use std::io::Write;
use std::time::Instant;

use super::copy::TableCopy;

pub struct Progress {
    enabled: bool,
    last_tick: Instant,
}

impl Progress {
    /// Per-table lines when `enabled` (stdout is a terminal).
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            last_tick: Instant::now(),
        }
    }

    pub fn plan(&self, to_copy: usize, unchanged: usize) {
        if self.enabled {
            println!("{to_copy} tables to copy, {unchanged} unchanged since the last replication");
        }
    }

    /// Called while `table` streams, with the bytes so far; redraws at most 5 times a second.
    pub fn tick(&mut self, table: &str, bytes: u64) {
        if !self.enabled || self.last_tick.elapsed().as_millis() < 200 {
            return;
        }
        self.last_tick = Instant::now();
        print!("\r  {table:<32} {:>12} ...", human_bytes(bytes));
        let _ = std::io::stdout().flush();
    }

    pub fn table_done(&self, copy: &TableCopy) {
        if self.enabled {
            println!(
                "\r  {:<32} {:>10} rows {:>12} {:>8.2} s",
                copy.table,
                copy.rows,
                human_bytes(copy.bytes),
                copy.seconds
            );
        }
    }
}

/// `1.2 MB`-style sizes for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234_000), "1.2 MB");
    }
}
