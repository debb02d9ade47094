//! The dashboard's timeline: an inline SVG of the monitor's recent rounds ([`Run`]s), one row
//! per path (ICMP, TCP, SIP) and one for the witness, one rectangle per run of the same colour
//! (green answered, red silent; the witness row is empty where it was not asked), a vertical
//! line at each verdict change. Its size follows the changes, not the round length: a steady
//! master is one rectangle per row whether rounds come every second or every 300 ms. A piece
//! narrower than [`MIN_PIECE`] (of the [`WIDTH`] units) takes what follows up to that width,
//! silent winning over answered, so that a master flapping every round still draws at most
//! `WIDTH / MIN_PIECE` rectangles a row (under 50 KB for the four rows), and a lone bad round
//! stays visible.
//!
//! Hooks: `svg#timeline[data-rounds]`, `rect.mark.<path>.ok|bad[data-rounds]`,
//! `line.change.to-<verdict>`.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::dashboard::esc;
use crate::monitor::rounds::{ProbePath, Run, Seen, WINDOW};
use crate::status::documents::TransitionRecord;

/// Its shortest span: a monitor that just started shows its first minute at a readable scale.
const MIN_WINDOW_S: i64 = 60;
/// The rows' width, in SVG units.
pub const WIDTH: f64 = 600.0;
/// The narrowest piece drawn (but the newest), in SVG units.
pub const MIN_PIECE: f64 = 4.0;
/// Room for the rows' names, also in the larger font of a phone's screen.
const LEFT: f64 = 96.0;
const ROW: f64 = 22.0;
/// A bar's height.
const BAR: f64 = 16.0;
const TOP: f64 = 4.0;

/// One rectangle of a row: from `x0` to `x1`, and the rounds it stands for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Piece {
    pub x0: f64,
    pub x1: f64,
    pub answered: bool,
    pub rounds: u32,
}

/// `path`'s row from `spans` (each run's extent in SVG units and what it saw, oldest first):
/// touching pieces of one colour joined, the witness's unasked runs left empty, a piece
/// narrower than [`MIN_PIECE`] widened over what follows it (silent wins), so that every piece
/// but one before a gap in the rounds, or the newest, is at least that wide.
pub fn pieces(spans: &[(f64, f64, Seen, u32)]) -> Vec<Piece> {
    const TOUCH: f64 = 1e-6;
    let mut out: Vec<Piece> = Vec::new();
    for &(x0, x1, seen, rounds) in spans {
        let answered = match seen {
            Seen::Answered => true,
            Seen::Silent => false,
            Seen::NotAsked => {
                // Left empty; a narrow piece before it still gets its width, over it.
                if let Some(last) = out.last_mut()
                    && x0 <= last.x1 + TOUCH
                {
                    last.x1 = last.x1.max(x1.min(last.x0 + MIN_PIECE));
                }
                continue;
            }
        };
        let mut next = Piece {
            x0,
            x1,
            answered,
            rounds,
        };
        if let Some(last) = out.last_mut()
            && next.x0 <= last.x1 + TOUCH
        {
            if last.answered == next.answered {
                last.x1 = last.x1.max(next.x1);
                last.rounds += next.rounds;
                continue;
            }
            let edge = last.x0 + MIN_PIECE;
            if last.x1 < edge {
                if next.x1 <= edge {
                    last.x1 = next.x1;
                    last.answered &= next.answered;
                    last.rounds += next.rounds;
                    continue;
                }
                last.x1 = edge;
                next.x0 = edge;
            }
        }
        out.push(next);
    }
    out
}

/// The SVG over the last [`WINDOW`] (less when the runs kept span less, down to a minute).
pub fn timeline(
    out: &mut String,
    runs: &[Run],
    transitions: &[TransitionRecord],
    now: DateTime<Utc>,
) {
    let window_s = WINDOW.as_secs() as i64;
    let span = runs
        .first()
        .map(|r| (now - r.first()).num_seconds() + 1)
        .unwrap_or(window_s)
        .clamp(MIN_WINDOW_S, window_s);
    let start = now - chrono::Duration::seconds(span);
    let x = |at: DateTime<Utc>| {
        let ms = (at - start).num_milliseconds().clamp(0, span * 1000) as f64;
        LEFT + ms / (span as f64 * 1000.0) * WIDTH
    };
    // Each run reaches to the next one when no gap parts them, else over its own period.
    let extents: Vec<(f64, f64)> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let end = match runs.get(i + 1) {
                Some(next) if next.follows_previous() => next.first(),
                _ => run.last() + run.period().unwrap_or_default(),
            };
            (x(run.first()), x(end))
        })
        .collect();
    let rounds: u32 = runs
        .iter()
        .filter(|r| r.last() >= start)
        .map(Run::rounds)
        .sum();
    let rows = ProbePath::ALL.len() as f64;
    let bottom = TOP + rows * ROW;
    let _ = write!(
        out,
        "<svg id=\"timeline\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"probe rounds\" data-rounds=\"{rounds}\">",
        w = LEFT + WIDTH + 4.0,
        h = bottom + 18.0,
    );
    for (row, path) in ProbePath::ALL.into_iter().enumerate() {
        let y = TOP + row as f64 * ROW;
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{}\">{}</text><rect class=\"lane\" x=\"{LEFT}\" y=\"{y}\" width=\"{WIDTH}\" height=\"{BAR}\"/>",
            y + 13.0,
            path.name().to_uppercase()
        );
        let spans: Vec<(f64, f64, Seen, u32)> = runs
            .iter()
            .zip(&extents)
            .filter(|(run, _)| run.last() >= start)
            .map(|(run, &(x0, x1))| (x0, x1, run.seen(path), run.rounds()))
            .collect();
        for piece in pieces(&spans) {
            let _ = write!(
                out,
                "<rect class=\"mark {} {}\" x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{BAR}\" data-rounds=\"{}\"/>",
                path.name(),
                if piece.answered { "ok" } else { "bad" },
                piece.x0,
                (piece.x1 - piece.x0).max(1.0),
                piece.rounds,
            );
        }
    }
    for t in transitions.iter().filter(|t| t.at >= start) {
        let x0 = x(t.at);
        let _ = write!(
            out,
            "<line class=\"change to-{}\" x1=\"{x0:.1}\" x2=\"{x0:.1}\" y1=\"2\" y2=\"{bottom}\"><title>{} {} → {}: {}</title></line>",
            t.to,
            t.at.format("%H:%M:%S"),
            t.from,
            t.to,
            esc(&t.reason),
        );
    }
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"{y}\">−{}</text><text x=\"{}\" y=\"{y}\" text-anchor=\"middle\">−{}</text>\
<text x=\"{}\" y=\"{y}\" text-anchor=\"end\">now</text></svg>\
<p class=\"muted\">green answered, red silent (a run of rounds that saw the same is one \
bar); the witness row shows the checks made before a takeover, empty where none was asked; \
a vertical line where the verdict changed: red master down, green master up</p>",
        ago(span),
        LEFT + WIDTH / 2.0,
        ago(span / 2),
        LEFT + WIDTH,
        y = bottom + 14.0,
    );
    if rounds == 0 {
        out.push_str("<p class=\"muted\">no round in the last 10 minutes (the timeline is kept in memory: it starts again with the monitor)</p>");
    }
}

/// `seconds` as the axis says it: `90 s`, `5 min`.
fn ago(seconds: i64) -> String {
    if seconds < 120 && seconds % 60 != 0 {
        format!("{seconds} s")
    } else {
        format!("{} min", seconds / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::rounds::{Mark, RoundLog};
    use crate::monitor::verdict::{Observation, Verdict};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn svg(runs: &[Run], transitions: &[TransitionRecord], now: DateTime<Utc>) -> String {
        let mut out = String::new();
        timeline(&mut out, runs, transitions, now);
        out
    }

    fn count(svg: &str, class: &str) -> usize {
        svg.matches(&format!("class=\"{class}\"")).count()
    }

    #[test]
    fn touching_pieces_of_a_colour_are_one_and_a_narrow_one_stays_visible() {
        use Seen::*;
        let p = pieces(&[
            (0.0, 10.0, Answered, 10),
            (10.0, 20.0, Answered, 10),
            (20.0, 20.5, Silent, 1),
            (20.5, 30.0, Answered, 9),
            (40.0, 50.0, NotAsked, 10),
            (50.0, 50.2, Answered, 1),
            (50.2, 50.4, Silent, 1),
            (50.4, 60.0, Answered, 20),
        ]);
        let shape: Vec<(f64, f64, bool, u32)> = p
            .iter()
            .map(|p| (p.x0, p.x1, p.answered, p.rounds))
            .collect();
        assert_eq!(
            shape,
            vec![
                (0.0, 20.0, true, 20),
                (20.0, 24.0, false, 1),
                (24.0, 30.0, true, 9),
                (50.0, 54.0, false, 2),
                (54.0, 60.0, true, 20),
            ]
        );
    }

    /// The rounds of a failover at `period_ms`: the master up for 4 min, silent for 6; the
    /// witness asked on the last bad round before the takeover and answering.
    fn failover(period_ms: i64) -> (Vec<Run>, DateTime<Utc>) {
        let log = RoundLog::new(std::time::Duration::from_millis(3 * period_ms as u64));
        let start = at("2026-11-25T10:00:00Z");
        let rounds = 600_000 / period_ms;
        let mut now = start;
        for i in 0..rounds {
            now = start + chrono::Duration::milliseconds(i * period_ms);
            let up = now < at("2026-11-25T10:04:00Z");
            let witness = (now >= at("2026-11-25T10:04:02Z") && now < at("2026-11-25T10:04:03Z"))
                .then_some(true);
            let seen = Observation {
                icmp: up,
                tcp: up,
                sip: up,
            };
            log.push(Mark::of(now, seen, witness));
        }
        (log.snapshot(), now)
    }

    fn down_at(t: &str) -> TransitionRecord {
        TransitionRecord {
            from: Verdict::Up,
            to: Verdict::Down,
            at: at(t),
            reason: "no SIP answer for 1.2 s (host down)".into(),
            evidence: String::new(),
        }
    }

    #[test]
    fn a_failover_draws_a_few_bars_whatever_the_round_length() {
        let mut sizes = Vec::new();
        for period_ms in [1000, 300] {
            let (runs, now) = failover(period_ms);
            let svg = svg(&runs, &[down_at("2026-11-25T10:04:03Z")], now);
            for path in ["icmp", "tcp", "sip"] {
                assert_eq!(count(&svg, &format!("mark {path} ok")), 1, "{svg}");
                assert_eq!(count(&svg, &format!("mark {path} bad")), 1, "{svg}");
            }
            assert_eq!(count(&svg, "mark witness ok"), 1, "{svg}");
            assert_eq!(count(&svg, "mark witness bad"), 0, "{svg}");
            assert_eq!(count(&svg, "change to-down"), 1);
            assert!(svg.contains(&format!("data-rounds=\"{}\"", 600_000 / period_ms)));
            sizes.push(svg.len());
        }
        assert!(sizes.iter().all(|&s| s < 4096), "a few KB: {sizes:?}");
    }

    #[test]
    fn a_master_flapping_every_round_stays_bounded() {
        let log = RoundLog::default();
        let start = at("2026-11-25T10:00:00Z");
        let mut now = start;
        for i in 0..2000 {
            now = start + chrono::Duration::milliseconds(i * 300);
            let up = i % 2 == 0;
            let seen = Observation {
                icmp: up,
                tcp: up,
                sip: up,
            };
            log.push(Mark::of(now, seen, (!up).then_some(i % 4 == 1)));
        }
        let svg = svg(&log.snapshot(), &[], now);
        let per_row = (WIDTH / MIN_PIECE) as usize + 1;
        for path in ["icmp", "tcp", "sip", "witness"] {
            let bars =
                count(&svg, &format!("mark {path} ok")) + count(&svg, &format!("mark {path} bad"));
            assert!(bars <= per_row, "{path}: {bars}");
        }
        assert!(svg.len() < 50 * 1024, "{}", svg.len());
    }

    #[test]
    fn a_gap_in_the_rounds_shows_as_a_gap_and_old_runs_are_not_drawn() {
        let log = RoundLog::new(std::time::Duration::from_secs(3));
        let start = at("2026-11-25T10:00:00Z");
        let up = Observation {
            icmp: true,
            tcp: true,
            sip: true,
        };
        for i in 0..60 {
            log.push(Mark::of(start + chrono::Duration::seconds(i), up, None));
        }
        for i in 120..180 {
            log.push(Mark::of(start + chrono::Duration::seconds(i), up, None));
        }
        let now = start + chrono::Duration::seconds(180);
        let svg = svg(&log.snapshot(), &[], now);
        assert_eq!(count(&svg, "mark sip ok"), 2, "{svg}");
        assert_eq!(
            count(&svg, "mark witness ok") + count(&svg, "mark witness bad"),
            0
        );
        // Ten minutes later, only the runs of the window are drawn.
        let later = svg_at(&log, now + chrono::Duration::seconds(500));
        assert_eq!(count(&later, "mark sip ok"), 1, "{later}");
        assert!(later.contains("data-rounds=\"60\""), "{later}");
    }

    fn svg_at(log: &RoundLog, now: DateTime<Utc>) -> String {
        svg(&log.snapshot(), &[], now)
    }
}
