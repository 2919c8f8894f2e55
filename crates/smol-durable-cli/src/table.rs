//! Output as smol-wf 0.3.4 prints it: aligned text tables, humanised times ("5m ago") and
//! pretty JSON objects whose keys keep a fixed order (serde_json's own maps sort their keys).

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use unicode_width::UnicodeWidthStr;

/// A table of left-aligned columns: every cell is padded to its column's width (the widest cell
/// or header, in terminal display width) and followed by two spaces, the last one included.
#[derive(Debug, Clone)]
pub struct Table {
    /// The header first, then the rows.
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and no rows yet.
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|cell| (*cell).to_owned()).collect()],
        }
    }

    /// Adds a row (missing cells are empty, extra cells are dropped).
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The lines: the header, then the rows (without newlines).
    pub fn lines(&self) -> Vec<String> {
        let columns = self.rows.first().map_or(0, Vec::len);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.width());
            }
        }
        self.rows
            .iter()
            .map(|row| {
                let mut line = String::new();
                for (index, width) in widths.iter().enumerate() {
                    let cell = row.get(index).map_or("", String::as_str);
                    line.push_str(cell);
                    let padding = width.saturating_sub(cell.width()) + 2;
                    line.extend(std::iter::repeat_n(' ', padding));
                }
                line
            })
            .collect()
    }
}

/// How long ago (or how far ahead) `at_ms` is from `now_ms`, as smol-wf says it: whole seconds,
/// minutes, hours, days, months of 30 days, years of 12 such months, each truncated:
/// `0s ago`, `59s ago`, `1m ago`, `23h ago`, `29d ago`, `1mo ago`, `11mo ago`, `2y ago`;
/// `in 3s` for a time in the future.
pub fn humanize(now_ms: i64, at_ms: i64) -> String {
    let diff = i128::from(now_ms) - i128::from(at_ms);
    let seconds = diff.unsigned_abs() / 1000;
    let amount = if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3600 {
        format!("{}m", seconds / 60)
    } else if seconds < 86_400 {
        format!("{}h", seconds / 3600)
    } else {
        let days = seconds / 86_400;
        let months = days / 30;
        if days < 30 {
            format!("{days}d")
        } else if months < 12 {
            format!("{months}mo")
        } else {
            format!("{}y", months / 12)
        }
    };
    if diff < 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// The current time, Unix epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A JSON value printed with its object keys in the order they were added.
#[derive(Debug, Clone)]
pub enum Json {
    /// Fields in order.
    Object(Object),
    /// Items in order.
    Array(Vec<Json>),
    /// Any other value, printed as serde_json prints it (its object keys sorted).
    Value(Value),
}

/// A JSON object whose fields keep their order.
#[derive(Debug, Clone, Default)]
pub struct Object(Vec<(String, Json)>);

impl Object {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// This object with one more field.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Json>) -> Self {
        self.push(key, value);
        self
    }

    /// Adds a field.
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<Json>) {
        self.0.push((key.into(), value.into()));
    }
}

impl From<Value> for Json {
    fn from(value: Value) -> Self {
        Self::Value(value)
    }
}

impl From<Object> for Json {
    fn from(object: Object) -> Self {
        Self::Object(object)
    }
}

impl From<Vec<Json>> for Json {
    fn from(items: Vec<Json>) -> Self {
        Self::Array(items)
    }
}

impl Json {
    /// Pretty JSON with a two-space indent, laid out by `serde_json::to_string_pretty`.
    pub fn pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Objects serialize their fields in order; serde_json's pretty printer does the layout.
impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Object(Object(fields)) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (key, value) in fields {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
            Self::Array(items) => serializer.collect_seq(items),
            Self::Value(value) => value.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{humanize, Json, Object, Table};

    const NOW: i64 = 1_796_291_600_000;

    /// `humanize` for a time `seconds` (fractions allowed) before now; negative: in the future.
    fn ago(seconds: f64) -> String {
        humanize(NOW, NOW - (seconds * 1000.0).round() as i64)
    }

    const DAY: f64 = 86_400.0;

    #[test]
    fn future_times_count_up_to_them() {
        for (seconds, shown) in [
            (-120.0, "in 2m"),
            (-61.0, "in 1m"),
            (-60.5, "in 1m"),
            (-59.5, "in 59s"),
            (-5.0, "in 5s"),
            (-4.2, "in 4s"),
            (-1.0, "in 1s"),
            (-0.5, "in 0s"),
            (-0.001, "in 0s"),
        ] {
            assert_eq!(ago(seconds), shown, "{seconds} s");
        }
    }

    #[test]
    fn seconds_are_truncated_and_start_at_zero() {
        for (seconds, shown) in [
            (0.0, "0s ago"),
            (0.3, "0s ago"),
            (0.9, "0s ago"),
            (1.0, "1s ago"),
            (1.5, "1s ago"),
            (1.99, "1s ago"),
            (58.9, "58s ago"),
            (59.0, "59s ago"),
            (59.99, "59s ago"),
        ] {
            assert_eq!(ago(seconds), shown, "{seconds} s");
        }
    }

    #[test]
    fn minutes_hours_and_days() {
        for (seconds, shown) in [
            (60.0, "1m ago"),
            (61.0, "1m ago"),
            (89.0, "1m ago"),
            (90.0, "1m ago"),
            (119.9, "1m ago"),
            (120.0, "2m ago"),
            (179.0, "2m ago"),
            (3599.9, "59m ago"),
            (3600.0, "1h ago"),
            (5400.0, "1h ago"),
            (7199.0, "1h ago"),
            (7200.0, "2h ago"),
            (86_399.9, "23h ago"),
            (86_400.0, "1d ago"),
            (172_799.0, "1d ago"),
            (172_800.0, "2d ago"),
            (604_800.0, "7d ago"),
            (14.0 * DAY, "14d ago"),
            (29.99 * DAY, "29d ago"),
        ] {
            assert_eq!(ago(seconds), shown, "{seconds} s");
        }
    }

    #[test]
    fn months_of_thirty_days_and_years_of_twelve_months() {
        for (days, shown) in [
            (30.0, "1mo ago"),
            (59.99, "1mo ago"),
            (60.0, "2mo ago"),
            (90.0, "3mo ago"),
            (180.0, "6mo ago"),
            (359.99, "11mo ago"),
            (360.0, "1y ago"),
            (365.0, "1y ago"),
            (719.0, "1y ago"),
            (720.0, "2y ago"),
            (730.0, "2y ago"),
            (3650.0, "10y ago"),
        ] {
            assert_eq!(ago(days * DAY), shown, "{days} d");
        }
        assert_eq!(ago(-400.0 * DAY), "in 1y");
        assert_eq!(humanize(i64::MAX, i64::MIN), "593066617y ago");
    }

    #[test]
    fn tables_pad_by_display_width_with_two_spaces_after_every_cell() {
        let mut table = Table::new(&["RUN ID", "WORKFLOW", "N"]);
        table.push(vec!["run_1".into(), "日本-x".into(), "10".into()]);
        table.push(vec!["run_22".into(), "soft\u{ad}hy".into(), "1".into()]);
        table.push(vec!["r".into()]);
        assert_eq!(
            table.lines(),
            [
                "RUN ID  WORKFLOW  N   ",
                "run_1   日本-x    10  ",
                "run_22  soft\u{ad}hy    1   ",
                "r                     ",
            ]
        );
        assert_eq!(Table::new(&["A", "BB"]).lines(), ["A  BB  "]);
    }

    #[test]
    fn json_objects_keep_their_field_order() {
        let inner = Object::new()
            .with("zeta", json!(1))
            .with("alpha", json!({"b": [1, 2], "a": {}}));
        let value = Json::Array(vec![
            Json::from(
                Object::new()
                    .with("runID", json!("run_1"))
                    .with("empty", Object::new())
                    .with("none", Json::Array(Vec::new()))
                    .with("inner", inner),
            ),
            Json::from(json!(null)),
        ]);
        let expected = json!([
            {"runID": "run_1", "empty": {}, "none": [], "inner": {"zeta": 1, "alpha": {"b": [1, 2], "a": {}}}},
            null
        ]);
        let text = value.pretty();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).ok(),
            Some(expected)
        );
        assert!(
            text.find("runID") < text.find("empty") && text.find("zeta") < text.find("alpha"),
            "{text}"
        );
        // The same layout as serde_json's pretty printer.
        let plain = json!([{"a": {"b": [1, {"c": "d"}], "e": {}}, "f": []}]);
        assert_eq!(
            Json::from(plain.clone()).pretty(),
            serde_json::to_string_pretty(&plain).unwrap_or_default()
        );
        let rebuilt = Json::Array(vec![Json::from(
            Object::new()
                .with(
                    "a",
                    Object::new()
                        .with("b", json!([1, {"c": "d"}]))
                        .with("e", json!({})),
                )
                .with("f", json!([])),
        )]);
        assert_eq!(
            rebuilt.pretty(),
            serde_json::to_string_pretty(&plain).unwrap_or_default()
        );
    }
}
