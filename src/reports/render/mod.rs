//! A template result rendered as a report file: CSV, JSON, XLSX (typed cells) or PDF (title,
//! parameters, a chart of the main series and the table).

mod chart;
mod pdf;
mod xlsx;

use serde::Serialize;
use serde_json::{json, Map, Value};

pub use self::chart::ChartSpec;
pub use self::pdf::pdf;
pub use self::xlsx::{xlsx, XLSX_MAX_ROWS};

/// What a cell holds, from the column's ClickHouse type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Integer,
    Float,
    Date,
    DateTime,
    Bool,
    Text,
}

impl Kind {
    /// `Nullable(…)` and `LowCardinality(…)` are looked through.
    pub fn of(ty: &str) -> Self {
        let mut ty = ty.trim();
        loop {
            let inner = ["Nullable(", "LowCardinality("]
                .iter()
                .find_map(|w| ty.strip_prefix(w).and_then(|t| t.strip_suffix(')')));
            match inner {
                Some(inner) => ty = inner.trim(),
                None => break,
            }
        }
        if ty.starts_with("Int") || ty.starts_with("UInt") {
            Kind::Integer
        } else if ty.starts_with("Float") || ty.starts_with("Decimal") {
            Kind::Float
        } else if ty == "Date" || ty == "Date32" {
            Kind::Date
        } else if ty.starts_with("DateTime") {
            Kind::DateTime
        } else if ty == "Bool" {
            Kind::Bool
        } else {
            Kind::Text
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Kind::Integer | Kind::Float)
    }

    fn temporal(self) -> bool {
        matches!(self, Kind::Date | Kind::DateTime)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub kind: Kind,
}

/// A template's result: its columns and rows.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    /// From a template's JSON result (`meta` and `data`, as `GET /v1/queries/…` answers).
    pub fn from_result(result: &Value) -> Self {
        let columns: Vec<Column> = result["meta"]
            .as_array()
            .map(|meta| {
                meta.iter()
                    .map(|m| {
                        let ty = m["type"].as_str().unwrap_or("String").to_string();
                        Column {
                            name: m["name"].as_str().unwrap_or_default().to_string(),
                            kind: Kind::of(&ty),
                            ty,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rows = result["data"]
            .as_array()
            .map(|data| {
                data.iter()
                    .map(|row| match row {
                        Value::Object(fields) => columns
                            .iter()
                            .map(|c| fields.get(&c.name).cloned().unwrap_or(Value::Null))
                            .collect(),
                        Value::Array(cells) => cells
                            .iter()
                            .cloned()
                            .chain(std::iter::repeat(Value::Null))
                            .take(columns.len())
                            .collect(),
                        _ => vec![Value::Null; columns.len()],
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { columns, rows }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// A cell as a number (ClickHouse quotes 64-bit integers in JSON).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

/// A cell as text, the way a person reads it.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where the report came from, printed on it.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    pub title: String,
    pub description: String,
    pub template: String,
    pub version: u32,
    /// The experiment whose results these are (its name), instead of a template's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The parameters the template ran with, relative dates resolved.
    pub params: Map<String, Value>,
    pub period: Option<String>,
    pub generated_at: chrono::DateTime<chrono::Utc>,
}

impl Header {
    fn lines(&self) -> Vec<(String, String)> {
        let source = match &self.experiment {
            Some(name) => ("Experiment".to_string(), name.clone()),
            None => (
                "Template".to_string(),
                format!("{} v{}", self.template, self.version),
            ),
        };
        let mut lines = vec![
            source,
            (
                "Generated".to_string(),
                self.generated_at
                    .format("%Y-%m-%d %H:%M:%S UTC")
                    .to_string(),
            ),
        ];
        if let Some(period) = &self.period {
            lines.push(("Period".into(), period.clone()));
        }
        for (name, value) in &self.params {
            lines.push((name.clone(), text(value)));
        }
        lines
    }
}

/// A report file in one format.
pub struct File {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub extension: &'static str,
}

/// Why a report's file cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the CSV cannot be written: {0}")]
    Csv(#[from] csv::Error),
    #[error("the JSON cannot be written: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the XLSX cannot be written: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
    #[error("the chart cannot be drawn: {0}")]
    Chart(String),
    #[error("the PDF cannot be written: {0}")]
    Pdf(String),
    /// The result does not fit the format.
    #[error("{0}")]
    TooLarge(String),
}

pub fn csv(table: &Table) -> Result<File, RenderError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(table.columns.iter().map(|c| c.name.as_str()))?;
    for row in &table.rows {
        writer.write_record(row.iter().map(text))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| RenderError::Csv(e.into_error().into()))?;
    Ok(File {
        bytes,
        content_type: "text/csv; charset=utf-8",
        extension: "csv",
    })
}

pub fn json(header: &Header, table: &Table) -> Result<File, RenderError> {
    let data: Vec<Value> = table
        .rows
        .iter()
        .map(|row| {
            Value::Object(
                table
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(c, v)| (c.name.clone(), v.clone()))
                    .collect(),
            )
        })
        .collect();
    let body = json!({
        "report": header,
        "meta": table.columns,
        "data": data,
        "rows": table.rows.len(),
    });
    Ok(File {
        bytes: serde_json::to_vec_pretty(&body)?,
        content_type: "application/json",
        extension: "json",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn table() -> Table {
        Table::from_result(&json!({
            "meta": [
                {"name": "period", "type": "DateTime('UTC')"},
                {"name": "event", "type": "LowCardinality(String)"},
                {"name": "events", "type": "UInt64"},
                {"name": "revenue", "type": "Nullable(Float64)"},
            ],
            "data": [
                {"period": "2026-11-01 00:00:00", "event": "view", "events": "10", "revenue": null},
                {"period": "2026-11-01 00:00:00", "event": "purchase", "events": "2", "revenue": 19.5},
                {"period": "2026-11-02 00:00:00", "event": "view", "events": "14", "revenue": null},
                {"period": "2026-11-02 00:00:00", "event": "purchase", "events": "3", "revenue": 30.25},
            ]
        }))
    }

    #[test]
    fn kinds_follow_clickhouse_types_through_wrappers() {
        assert_eq!(Kind::of("Nullable(UInt64)"), Kind::Integer);
        assert_eq!(Kind::of("LowCardinality(Nullable(String))"), Kind::Text);
        assert_eq!(Kind::of("Decimal(18, 2)"), Kind::Float);
        assert_eq!(Kind::of("Date32"), Kind::Date);
        assert_eq!(Kind::of("DateTime64(3, 'UTC')"), Kind::DateTime);
        assert_eq!(Kind::of("Array(String)"), Kind::Text);
    }

    #[test]
    fn csv_quotes_and_keeps_every_row() {
        let mut t = table();
        t.rows[0][1] = json!("a, \"quoted\" name");
        let file = csv(&t).unwrap();
        let text = String::from_utf8(file.bytes).unwrap();
        assert!(text.starts_with("period,event,events,revenue\n"));
        assert!(text.contains("\"a, \"\"quoted\"\" name\""));
        assert_eq!(text.lines().count(), 5);
    }

    fn header() -> Header {
        Header {
            title: "Отчёт".into(),
            description: String::new(),
            template: "t".into(),
            version: 1,
            experiment: None,
            params: Map::new(),
            period: None,
            generated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn empty_and_wide_results_render_in_every_format() {
        let empty = Table {
            columns: table().columns,
            rows: Vec::new(),
        };
        let wide = Table::from_result(&json!({
            "meta": (0..25).map(|i| json!({"name": format!("c{i}"), "type": "UInt32"})).collect::<Vec<_>>(),
            "data": (0..700).map(|r| Value::Array((0..20).map(|c| json!(r * c)).collect())).collect::<Vec<_>>(),
        }));
        assert_eq!(wide.rows[0].len(), 25, "short rows are padded");
        for t in [&empty, &wide, &table()] {
            for file in [
                csv(t).unwrap(),
                json(&header(), t).unwrap(),
                xlsx(&header(), t).unwrap(),
                pdf(&header(), t, &ChartSpec::default(), 500).unwrap(),
            ] {
                assert!(!file.bytes.is_empty());
            }
        }
        let many = pdf(&header(), &wide, &ChartSpec::default(), 500).unwrap();
        let pages = many
            .bytes
            .windows(12)
            .filter(|w| w.starts_with(b"/Type /Page") && w[11] != b's')
            .count();
        assert!(pages >= 10, "500 rows take several pages ({pages})");
    }
}
