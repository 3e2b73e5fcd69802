//! Aligned text tables and number formats (rates, durations) for the human rendering and the
//! benchmarks' tables.

use std::fmt::Write as _;

/// A table with a header row, printed with aligned columns.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Columns whose cells are right-aligned (numbers).
    right: Vec<bool>,
}

impl Table {
    /// A table with these column headers; columns whose header ends in a space-free unit or
    /// number are aligned right when `numeric` says so.
    pub fn new(headers: &[(&str, bool)]) -> Self {
        Table {
            headers: headers.iter().map(|(h, _)| h.to_string()).collect(),
            right: headers.iter().map(|(_, r)| *r).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, with a rule under the header.
    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let width = |c: usize| {
            std::iter::once(&self.headers[c])
                .chain(self.rows.iter().filter_map(|r| r.get(c)))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..cols).map(width).collect();
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            for (c, w) in widths.iter().enumerate() {
                let cell = cells.get(c).map(String::as_str).unwrap_or("");
                let sep = if c + 1 == cols { "" } else { "  " };
                if self.right[c] {
                    let _ = write!(out, "{cell:>w$}{sep}");
                } else {
                    let _ = write!(out, "{cell:<w$}{sep}");
                }
            }
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('\n');
        };
        line(&mut out, &self.headers);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(&mut out, &rule);
        for r in &self.rows {
            line(&mut out, r);
        }
        out
    }
}

/// "2.41 M", "151 k", "812": a rate with an SI prefix.
pub fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A duration in the unit that reads best.
pub fn secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&[("name", false), ("rate", true)]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["longer".into(), "1000".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "name    rate");
        assert_eq!(lines[2], "a          1");
        assert_eq!(lines[3], "longer  1000");
        assert_eq!(
            (
                si(2_410_000.0).as_str(),
                si(151_000.0).as_str(),
                si(12.0).as_str()
            ),
            ("2.41 M", "151.0 k", "12")
        );
    }
}
