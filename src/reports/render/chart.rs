//! The chart of a report: which columns are charted ([`ChartSpec`], or picked from the column
//! kinds), their series, and the chart drawn as pixels.

use std::sync::Once;

use serde::Serialize;

use super::{number, text, Kind, Table};

/// Which columns are charted: `x` and the series `y`, optionally split by the values of `by`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartSpec {
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Vec<String>,
    #[serde(default)]
    pub by: Option<String>,
}

impl ChartSpec {
    /// Checks that the named columns exist among `columns` (when the template declares them).
    pub fn validate(&self, columns: &[String]) -> Result<(), String> {
        if columns.is_empty() {
            return Ok(());
        }
        let named = self
            .x
            .iter()
            .map(|x| ("chart.x", x))
            .chain(self.y.iter().map(|y| ("chart.y", y)))
            .chain(self.by.iter().map(|b| ("chart.by", b)));
        for (path, name) in named {
            if !columns.contains(name) {
                return Err(format!(
                    "{path}: the template has no column {name:?} (columns: {})",
                    columns.join(", ")
                ));
            }
        }
        if self.y.len() > MAX_SERIES {
            return Err(format!("chart.y: at most {MAX_SERIES} columns"));
        }
        Ok(())
    }
}

const MAX_SERIES: usize = 8;

/// One line of the chart.
#[derive(Debug, Clone)]
pub(super) struct Series {
    pub(super) name: String,
    /// `None` where the row has no value.
    pub(super) points: Vec<Option<f64>>,
}

/// The chart's data: labels along x and the series.
#[derive(Debug, Clone)]
pub(super) struct ChartData {
    pub(super) x_name: String,
    pub(super) labels: Vec<String>,
    pub(super) series: Vec<Series>,
}

/// Picks what to chart: the given columns, or the first date/time column (else the first text
/// column) along x and the first numeric column, split by a text column with few values.
pub(super) fn chart_data(table: &Table, spec: &ChartSpec) -> Option<ChartData> {
    let x = match &spec.x {
        Some(x) => table.index(x)?,
        None => table
            .columns
            .iter()
            .position(|c| c.kind.temporal())
            .or_else(|| table.columns.iter().position(|c| c.kind == Kind::Text))?,
    };
    let ys: Vec<usize> = if spec.y.is_empty() {
        vec![table
            .columns
            .iter()
            .enumerate()
            .position(|(i, c)| i != x && c.kind.numeric())?]
    } else {
        spec.y.iter().filter_map(|y| table.index(y)).collect()
    };
    if ys.is_empty() {
        return None;
    }
    let by = match &spec.by {
        Some(by) => table.index(by),
        None if spec.y.is_empty() => table.columns.iter().enumerate().position(|(i, c)| {
            i != x && c.kind == Kind::Text && {
                let mut values: Vec<String> = table.rows.iter().map(|r| text(&r[i])).collect();
                values.sort();
                values.dedup();
                (2..=MAX_SERIES).contains(&values.len())
            }
        }),
        None => None,
    };
    // x labels in order of first appearance (results are ordered by the template).
    let mut labels: Vec<String> = Vec::new();
    let mut position = std::collections::HashMap::new();
    for row in &table.rows {
        let label = text(row.get(x)?);
        position.entry(label.clone()).or_insert_with(|| {
            labels.push(label);
            labels.len() - 1
        });
    }
    let mut series: Vec<Series> = Vec::new();
    for &y in &ys {
        for row in &table.rows {
            let group = by.map(|b| text(&row[b]));
            let name = match (&group, ys.len()) {
                (Some(g), 1) if g.is_empty() => table.columns[y].name.clone(),
                (Some(g), 1) => g.clone(),
                (Some(g), _) => format!("{} {g}", table.columns[y].name),
                (None, _) => table.columns[y].name.clone(),
            };
            let index = match series.iter().position(|s| s.name == name) {
                Some(i) => i,
                None if series.len() < MAX_SERIES => {
                    series.push(Series {
                        name,
                        points: vec![None; labels.len()],
                    });
                    series.len() - 1
                }
                None => continue,
            };
            let at = position[&text(&row[x])];
            let value = number(&row[y]);
            let point = &mut series[index].points[at];
            *point = match (*point, value) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
        }
    }
    // Days of a DateTime column read better without their midnight.
    if table.columns[x].kind == Kind::DateTime && labels.iter().all(|l| l.ends_with(" 00:00:00")) {
        for label in &mut labels {
            label.truncate(label.len() - " 00:00:00".len());
        }
    }
    Some(ChartData {
        x_name: table.columns[x].name.clone(),
        labels,
        series,
    })
}

/// Series colours (chart lines and the PDF legend).
const PALETTE: [(u8, u8, u8); MAX_SERIES] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
];

fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        let registered = plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            dejavu::sans::regular(),
        );
        if registered.is_err() {
            tracing::warn!("the chart font could not be registered; charts have no labels");
        }
    });
}

/// Large numbers the short way on axes: 12 500 → 12.5k.
fn short_number(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e9 {
        (value / 1e9, "B")
    } else if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

/// The chart as RGB pixels.
pub(super) fn chart_pixels(
    data: &ChartData,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, super::RenderError> {
    use plotters::prelude::*;
    register_fonts();
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    {
        let error = |e: DrawingAreaErrorKind<_>| super::RenderError::Chart(e.to_string());
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(error)?;
        let values = data.series.iter().flat_map(|s| s.points.iter().flatten());
        let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        });
        let (low, high) = if low.is_finite() {
            (low.min(0.0), if high > low { high } else { low + 1.0 })
        } else {
            (0.0, 1.0)
        };
        let span = (data.labels.len().max(2) - 1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .margin(24)
            .margin_right(80)
            .x_label_area_size(56)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..span, low..high * 1.05)
            .map_err(error)?;
        let labels = &data.labels;
        let label_at = |x: &f64| {
            let i = x.round();
            if (x - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            labels.get(i as usize).cloned().unwrap_or_default()
        };
        chart
            .configure_mesh()
            .x_labels(labels.len().clamp(2, 10))
            .x_label_formatter(&label_at)
            .y_label_formatter(&|y| short_number(*y))
            .x_desc(data.x_name.as_str())
            .label_style(("sans-serif", 22))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(error)?;
        for (i, series) in data.series.iter().enumerate() {
            let (r, g, b) = PALETTE[i % PALETTE.len()];
            let color = RGBColor(r, g, b);
            let points: Vec<(f64, f64)> = series
                .points
                .iter()
                .enumerate()
                .filter_map(|(x, y)| y.map(|y| (x as f64, y)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(4)))
                .map_err(error)?
                .label(series.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(4))
                });
            if points.len() <= 31 {
                chart
                    .draw_series(points.iter().map(|p| Circle::new(*p, 5, color.filled())))
                    .map_err(error)?;
            }
        }
        if data.series.len() > 1 || data.series.iter().any(|s| !s.name.is_empty()) {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 22))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .draw()
                .map_err(error)?;
        }
        root.present().map_err(error)?;
    }
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::render::tests::table;

    #[test]
    fn the_chart_splits_the_main_series_by_a_text_column_with_few_values() {
        let data = chart_data(&table(), &ChartSpec::default()).unwrap();
        assert_eq!(data.x_name, "period");
        assert_eq!(data.labels.len(), 2);
        let names: Vec<&str> = data.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["view", "purchase"]);
        assert_eq!(data.series[0].points, [Some(10.0), Some(14.0)]);
    }

    #[test]
    fn named_chart_columns_are_checked_against_the_template() {
        let spec = ChartSpec {
            x: Some("day".into()),
            y: vec!["nope".into()],
            by: None,
        };
        let err = spec
            .validate(&["day".to_string(), "users".to_string()])
            .unwrap_err();
        assert!(err.starts_with("chart.y:"), "{err}");
    }

    #[test]
    fn short_numbers_on_axes() {
        assert_eq!(short_number(12_500.0), "12.5k");
        assert_eq!(short_number(3_000_000.0), "3M");
        assert_eq!(short_number(42.0), "42");
    }
}
