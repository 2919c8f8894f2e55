//! Server-rendered SVG: a run's timeline (its steps as bars on one time axis, grouped by phase,
//! so parallel calls stand side by side) and its tokens over time against the budget. Every
//! label goes through maud, escaped like the rest of the page.

use maud::{html, Markup};
use serde_json::Value;

use super::pages::duration;

/// Width of the bars' area and of a label column, in SVG units.
const WIDTH: f64 = 760.0;
const LABEL: f64 = 230.0;
const ROW: f64 = 16.0;
/// Steps drawn one by one; a page with more shows its phases only.
const MAX_BARS: usize = 400;

fn state_color(state: &str) -> &'static str {
    match state {
        "completed" => "#3f9f63",
        "failed" => "#c84040",
        "cancelled" => "#999",
        _ => "#3a78c8",
    }
}

fn steps_text(count: usize) -> String {
    if count == 1 {
        "1 step".to_owned()
    } else {
        format!("{count} steps")
    }
}

struct Bar<'a> {
    label: String,
    tip: String,
    start: i64,
    end: i64,
    color: &'a str,
    phase: bool,
}

/// The steps shown on a run's page, as a waterfall grouped by phase (in the order phases were
/// first reached). A running step's bar ends now.
pub(super) fn timeline(steps: &[Value], now: i64) -> Markup {
    let span = |step: &Value| {
        let start = step["createdAtMs"].as_i64().unwrap_or(now);
        let end = step["endedAtMs"].as_i64().unwrap_or(now).max(start);
        (start, end)
    };
    let mut phases: Vec<(String, Vec<&Value>)> = Vec::new();
    for step in steps {
        let phase = step["phase"].as_str().unwrap_or("(no phase)").to_owned();
        match phases.iter_mut().find(|(name, _)| *name == phase) {
            Some((_, members)) => members.push(step),
            None => phases.push((phase, vec![step])),
        }
    }
    let each_step = steps.len() <= MAX_BARS;
    let mut bars = Vec::new();
    for (phase, members) in &phases {
        let start = members.iter().map(|step| span(step).0).min().unwrap_or(now);
        let end = members.iter().map(|step| span(step).1).max().unwrap_or(now);
        bars.push(Bar {
            label: format!("{phase} ({})", steps_text(members.len())),
            tip: format!(
                "phase {phase}: {}, {}",
                steps_text(members.len()),
                duration(end - start)
            ),
            start,
            end,
            color: "#b9c3d6",
            phase: true,
        });
        if each_step {
            for step in members {
                let (start, end) = span(step);
                let what = step["prompt"]
                    .as_str()
                    .map(|prompt| prompt.chars().take(40).collect::<String>())
                    .unwrap_or_else(|| step["kind"].as_str().unwrap_or("").to_owned());
                bars.push(Bar {
                    label: format!("#{} {}", step["number"], what),
                    tip: format!(
                        "#{} {} {}: {}",
                        step["number"],
                        step["kind"].as_str().unwrap_or(""),
                        step["state"].as_str().unwrap_or(""),
                        duration(end - start)
                    ),
                    start,
                    end,
                    color: state_color(step["state"].as_str().unwrap_or("")),
                    phase: false,
                });
            }
        }
    }
    let Some(t0) = bars.iter().map(|bar| bar.start).min() else {
        return html! { p.muted { "No steps yet." } };
    };
    let t1 = bars
        .iter()
        .map(|bar| bar.end)
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let scale = WIDTH / (t1 - t0) as f64;
    let height = ROW * bars.len() as f64 + 18.0;
    html! {
        svg.timeline width=(LABEL + WIDTH + 10.0) height=(height) role="img"
            aria-label="timeline of the steps by phase" {
            @for (row, bar) in bars.iter().enumerate() {
                @let y = ROW * row as f64;
                text x="0" y=(y + 12.0) font-weight=(if bar.phase { "600" } else { "400" }) {
                    (bar.label.chars().take(38).collect::<String>())
                }
                rect x=(LABEL + (bar.start - t0) as f64 * scale) y=(y + 2.0)
                    width=(((bar.end - bar.start) as f64 * scale).max(2.0)) height=(ROW - 4.0)
                    fill=(bar.color) { title { (bar.tip) } }
            }
            text x=(LABEL) y=(height - 4.0) { "0" }
            text x=(LABEL + WIDTH) y=(height - 4.0) text-anchor="end" { (duration(t1 - t0)) }
        }
        @if !each_step { p.muted { "More than " (MAX_BARS) " steps on this page: phases only." } }
    }
}

/// Output tokens over time (the ledger's spent rows, cumulated; a fork's copied rows were its
/// source's), with the budget as a dashed line.
pub(super) fn tokens(ledger: &[Value], budget: Option<u64>) -> Markup {
    let mut points: Vec<(i64, u64)> = Vec::new();
    let mut total = 0;
    let mut rows: Vec<&Value> = ledger.iter().filter(|row| row["spent"] == true).collect();
    rows.sort_by_key(|row| row["createdAtMs"].as_i64().unwrap_or(0));
    for row in rows {
        total += row["outputTokens"].as_u64().unwrap_or(0);
        points.push((row["createdAtMs"].as_i64().unwrap_or(0), total));
    }
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return html! { p.muted { "No tokens spent yet." } };
    };
    let (width, height, left, bottom) = (520.0, 140.0, 60.0, 20.0);
    let top = budget.unwrap_or(0).max(last.1).max(1) as f64;
    let t0 = first.0;
    let span = (last.0 - t0).max(1) as f64;
    let x = |t: i64| left + (t - t0) as f64 / span * (width - left - 10.0);
    let y = |tokens: u64| (height - bottom) - tokens as f64 / top * (height - bottom - 10.0);
    let mut path = format!("M{:.1},{:.1}", x(t0), y(0));
    for (t, tokens) in &points {
        path.push_str(&format!(" L{:.1},{:.1}", x(*t), y(*tokens)));
    }
    html! {
        svg.tokens width=(width) height=(height) role="img" aria-label="output tokens over time" {
            line x1=(left) y1=(height - bottom) x2=(width - 10.0) y2=(height - bottom) stroke="#aab" {}
            line x1=(left) y1="10" x2=(left) y2=(height - bottom) stroke="#aab" {}
            text x=(left - 4.0) y=(y(last.1) + 4.0) text-anchor="end" { (last.1) }
            text x=(left - 4.0) y=(height - bottom) text-anchor="end" { "0" }
            text x=(width - 10.0) y=(height - 4.0) text-anchor="end" { (duration(last.0 - t0)) }
            @if let Some(budget) = budget {
                line x1=(left) y1=(y(budget)) x2=(width - 10.0) y2=(y(budget)) stroke="#c84040"
                    stroke-dasharray="5 4" {}
                text x=(width - 12.0) y=(y(budget) - 4.0) text-anchor="end" fill="#c84040" {
                    "budget " (budget)
                }
            }
            path d=(path) fill="none" stroke="#3a78c8" stroke-width="2" {}
        }
    }
}
