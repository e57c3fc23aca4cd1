//! A template result rendered as a report file: CSV, JSON, XLSX (typed cells) or PDF (title,
//! parameters, a chart of the main series and the table).

use std::sync::{Arc, Once};

use serde::Serialize;
use serde_json::{json, Map, Value};

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
    /// The parameters the template ran with, relative dates resolved.
    pub params: Map<String, Value>,
    pub period: Option<String>,
    pub generated_at: chrono::DateTime<chrono::Utc>,
}

impl Header {
    fn lines(&self) -> Vec<(String, String)> {
        let mut lines = vec![
            (
                "Template".to_string(),
                format!("{} v{}", self.template, self.version),
            ),
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
struct Series {
    name: String,
    /// `None` where the row has no value.
    points: Vec<Option<f64>>,
}

/// The chart's data: labels along x and the series.
#[derive(Debug, Clone)]
struct ChartData {
    x_name: String,
    labels: Vec<String>,
    series: Vec<Series>,
}

/// Picks what to chart: the given columns, or the first date/time column (else the first text
/// column) along x and the first numeric column, split by a text column with few values.
fn chart_data(table: &Table, spec: &ChartSpec) -> Option<ChartData> {
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

/// A report file in one format.
pub struct File {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub extension: &'static str,
}

pub fn csv(table: &Table) -> Result<File, String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(table.columns.iter().map(|c| c.name.as_str()))
        .map_err(|e| e.to_string())?;
    for row in &table.rows {
        writer
            .write_record(row.iter().map(text))
            .map_err(|e| e.to_string())?;
    }
    let bytes = writer.into_inner().map_err(|e| e.to_string())?;
    Ok(File {
        bytes,
        content_type: "text/csv; charset=utf-8",
        extension: "csv",
    })
}

pub fn json(header: &Header, table: &Table) -> Result<File, String> {
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
        bytes: serde_json::to_vec_pretty(&body).map_err(|e| e.to_string())?,
        content_type: "application/json",
        extension: "json",
    })
}

/// Rows a worksheet holds below its header.
pub const XLSX_MAX_ROWS: usize = 1_048_575;

pub fn xlsx(header: &Header, table: &Table) -> Result<File, String> {
    use rust_xlsxwriter::{Color, ExcelDateTime, Format, FormatBorder, Workbook};
    let error = |e: rust_xlsxwriter::XlsxError| e.to_string();
    if table.rows.len() > XLSX_MAX_ROWS {
        return Err(format!(
            "{} rows do not fit a worksheet ({XLSX_MAX_ROWS} at most); use csv",
            table.rows.len()
        ));
    }
    let mut workbook = Workbook::new();
    let bold = Format::new().set_bold();
    let head = Format::new()
        .set_bold()
        .set_background_color(Color::RGB(0xE8EEF7))
        .set_border_bottom(FormatBorder::Thin);
    let integer = Format::new().set_num_format("#,##0");
    let float = Format::new().set_num_format("#,##0.00");
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let datetime = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");

    let sheet = workbook.add_worksheet();
    sheet.set_name("Data").map_err(error)?;
    for (c, column) in table.columns.iter().enumerate() {
        let c = u16::try_from(c).map_err(|_| "too many columns".to_string())?;
        sheet
            .write_string_with_format(0, c, &column.name, &head)
            .map_err(error)?;
    }
    for (r, row) in table.rows.iter().enumerate() {
        let r = u32::try_from(r + 1).map_err(|_| "too many rows".to_string())?;
        for (c, (column, value)) in table.columns.iter().zip(row).enumerate() {
            let c = c as u16;
            if value.is_null() {
                continue;
            }
            let written = match column.kind {
                Kind::Integer | Kind::Float => match number(value) {
                    Some(n) => {
                        let format = if column.kind == Kind::Integer {
                            &integer
                        } else {
                            &float
                        };
                        sheet.write_number_with_format(r, c, n, format).map(|_| ())
                    }
                    None => sheet.write_string(r, c, text(value)).map(|_| ()),
                },
                Kind::Date | Kind::DateTime => {
                    let t = text(value);
                    let parsed = ExcelDateTime::parse_from_str(t.get(..19).unwrap_or(&t));
                    match parsed {
                        Ok(when) => {
                            let format = if column.kind == Kind::Date {
                                &date
                            } else {
                                &datetime
                            };
                            sheet
                                .write_datetime_with_format(r, c, &when, format)
                                .map(|_| ())
                        }
                        Err(_) => sheet.write_string(r, c, t).map(|_| ()),
                    }
                }
                Kind::Bool => match value {
                    Value::Bool(b) => sheet.write_boolean(r, c, *b).map(|_| ()),
                    other => sheet.write_string(r, c, text(other)).map(|_| ()),
                },
                Kind::Text => sheet.write_string(r, c, text(value)).map(|_| ()),
            };
            written.map_err(error)?;
        }
    }
    sheet.set_freeze_panes(1, 0).map_err(error)?;
    if !table.columns.is_empty() {
        sheet
            .autofilter(
                0,
                0,
                table.rows.len() as u32,
                table.columns.len() as u16 - 1,
            )
            .map_err(error)?;
    }
    sheet.autofit();

    let about = workbook.add_worksheet();
    about.set_name("Report").map_err(error)?;
    about
        .write_string_with_format(0, 0, &header.title, &bold)
        .map_err(error)?;
    if !header.description.is_empty() {
        about
            .write_string(1, 0, &header.description)
            .map_err(error)?;
    }
    let lines = header
        .lines()
        .into_iter()
        .chain([("Rows".to_string(), table.rows.len().to_string())]);
    for (line, (name, value)) in (3u32..).zip(lines) {
        about
            .write_string_with_format(line, 0, &name, &bold)
            .map_err(error)?;
        about.write_string(line, 1, &value).map_err(error)?;
    }
    about.autofit();
    Ok(File {
        bytes: workbook.save_to_buffer().map_err(error)?,
        content_type: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        extension: "xlsx",
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
fn chart_pixels(data: &ChartData, width: u32, height: u32) -> Result<Vec<u8>, String> {
    use plotters::prelude::*;
    register_fonts();
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    {
        let error = |e: DrawingAreaErrorKind<_>| e.to_string();
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

/// Pixels handed to the PDF writer.
#[derive(Clone, Hash)]
struct Pixels {
    rgb: Arc<Vec<u8>>,
    width: u32,
    height: u32,
}

impl krilla::image::CustomImage for Pixels {
    fn color_channel(&self) -> &[u8] {
        &self.rgb
    }
    fn alpha_channel(&self) -> Option<&[u8]> {
        None
    }
    fn bits_per_component(&self) -> krilla::image::BitsPerComponent {
        krilla::image::BitsPerComponent::Eight
    }
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
    fn icc_profile(&self) -> Option<&[u8]> {
        None
    }
    fn color_space(&self) -> krilla::image::ImageColorspace {
        krilla::image::ImageColorspace::Rgb
    }
}

/// Text widths, to fit cells.
struct Measure {
    font: ab_glyph::FontRef<'static>,
}

impl Measure {
    fn new(bytes: &'static [u8]) -> Option<Self> {
        ab_glyph::FontRef::try_from_slice(bytes)
            .ok()
            .map(|font| Self { font })
    }

    fn width(&self, text: &str, size: f32) -> f32 {
        use ab_glyph::{Font as _, ScaleFont as _};
        let scaled = self.font.as_scaled(size);
        text.chars()
            .map(|c| scaled.h_advance(scaled.glyph_id(c)))
            .sum()
    }

    /// `text` cut with an ellipsis to fit `width`.
    fn fit(&self, text: &str, size: f32, width: f32) -> String {
        if self.width(text, size) <= width {
            return text.to_string();
        }
        let room = width - self.width("…", size);
        let mut used = 0.0;
        let mut fitted: String = text
            .chars()
            .take_while(|c| {
                used += self.width(c.encode_utf8(&mut [0; 4]), size);
                used <= room
            })
            .collect();
        fitted.push('…');
        fitted
    }
}

/// PDF layout: A4 landscape, in points.
const PAGE_W: f32 = 842.0;
const PAGE_H: f32 = 595.0;
const MARGIN: f32 = 40.0;
const ROW_H: f32 = 15.0;
const CELL_SIZE: f32 = 8.5;

pub fn pdf(
    header: &Header,
    table: &Table,
    chart: &ChartSpec,
    max_rows: usize,
) -> Result<File, String> {
    use krilla::color::rgb;
    use krilla::geom::{PathBuilder, Point, Rect, Size, Transform};
    use krilla::page::PageSettings;
    use krilla::paint::Fill;
    use krilla::text::{Font, TextDirection};

    let regular = Font::new(dejavu::sans::regular().to_vec().into(), 0)
        .ok_or("the report font cannot be read")?;
    let bold = Font::new(dejavu::sans::bold().to_vec().into(), 0)
        .ok_or("the report font cannot be read")?;
    let measure = Measure::new(dejavu::sans::regular()).ok_or("the report font cannot be read")?;
    let measure_bold =
        Measure::new(dejavu::sans::bold()).ok_or("the report font cannot be read")?;
    let fill = |r, g, b| Fill {
        paint: rgb::Color::new(r, g, b).into(),
        ..Fill::default()
    };
    let page_settings =
        || PageSettings::from_wh(PAGE_W, PAGE_H).ok_or_else(|| "bad page size".to_string());

    let mut document = krilla::Document::new();
    document.set_metadata(
        krilla::metadata::Metadata::new()
            .title(header.title.clone())
            .creator("chgate".into()),
    );

    let shown = table.rows.len().min(max_rows);
    let widths = column_widths(table, &measure_bold, shown);
    let mut rows = table.rows[..shown].iter().peekable();
    let mut page_number = 0;
    loop {
        page_number += 1;
        let mut page = document.start_page_with(page_settings()?);
        let mut surface = page.surface();
        let mut y = MARGIN;
        if page_number == 1 {
            surface.set_fill(Some(fill(20, 20, 20)));
            y += 18.0;
            surface.draw_text(
                Point::from_xy(MARGIN, y),
                bold.clone(),
                18.0,
                &measure_bold.fit(&header.title, 18.0, PAGE_W - 2.0 * MARGIN),
                false,
                TextDirection::Auto,
            );
            y += 8.0;
            surface.set_fill(Some(fill(90, 90, 90)));
            if !header.description.is_empty() {
                y += 13.0;
                surface.draw_text(
                    Point::from_xy(MARGIN, y),
                    regular.clone(),
                    10.0,
                    &measure.fit(&header.description, 10.0, PAGE_W - 2.0 * MARGIN),
                    false,
                    TextDirection::Auto,
                );
            }
            y += 6.0;
            for (name, value) in header.lines() {
                y += 12.0;
                surface.draw_text(
                    Point::from_xy(MARGIN, y),
                    bold.clone(),
                    9.0,
                    &name,
                    false,
                    TextDirection::Auto,
                );
                surface.draw_text(
                    Point::from_xy(MARGIN + 110.0, y),
                    regular.clone(),
                    9.0,
                    &measure.fit(&value, 9.0, PAGE_W - 2.0 * MARGIN - 110.0),
                    false,
                    TextDirection::Auto,
                );
            }
            y += 14.0;
            match chart_data(table, chart) {
                Some(data) if !data.labels.is_empty() => {
                    let (w, h) = (1520u32, 600u32);
                    let pixels = chart_pixels(&data, w, h)?;
                    let image = krilla::image::Image::from_custom(
                        Pixels {
                            rgb: Arc::new(pixels),
                            width: w,
                            height: h,
                        },
                        true,
                    )?;
                    let draw_w = PAGE_W - 2.0 * MARGIN;
                    let draw_h = draw_w * h as f32 / w as f32;
                    surface.push_transform(&Transform::from_translate(MARGIN, y));
                    surface.draw_image(
                        image,
                        Size::from_wh(draw_w, draw_h).ok_or("bad chart size")?,
                    );
                    surface.pop();
                    y += draw_h + 12.0;
                }
                _ => {
                    y += 12.0;
                    surface.set_fill(Some(fill(120, 120, 120)));
                    surface.draw_text(
                        Point::from_xy(MARGIN, y),
                        regular.clone(),
                        9.0,
                        "No chart: the result has no numeric column along a date or label column.",
                        false,
                        TextDirection::Auto,
                    );
                    y += 12.0;
                }
            }
        }
        // The table, as many rows as fit, under its header row.
        if y + 2.0 * ROW_H > PAGE_H - MARGIN && rows.peek().is_some() {
            surface.finish();
            page.finish();
            continue;
        }
        let mut x = MARGIN;
        let mut draw_row = |surface: &mut krilla::surface::Surface,
                            y: f32,
                            cells: &[String],
                            head: bool,
                            stripe: bool| {
            if head || stripe {
                let shade = if head {
                    (226, 232, 242)
                } else {
                    (246, 247, 250)
                };
                surface.set_fill(Some(fill(shade.0, shade.1, shade.2)));
                let mut path = PathBuilder::new();
                if let Some(rect) = Rect::from_xywh(MARGIN, y, widths.iter().sum(), ROW_H) {
                    path.push_rect(rect);
                }
                if let Some(path) = path.finish() {
                    surface.draw_path(&path);
                }
            }
            surface.set_fill(Some(fill(25, 25, 25)));
            x = MARGIN;
            for ((cell, width), column) in cells.iter().zip(&widths).zip(&table.columns) {
                let metrics = if head { &measure_bold } else { &measure };
                let fitted = metrics.fit(cell, CELL_SIZE, width - 8.0);
                let right = column.kind.numeric();
                let at = if right {
                    x + width - 4.0 - metrics.width(&fitted, CELL_SIZE)
                } else {
                    x + 4.0
                };
                surface.draw_text(
                    Point::from_xy(at, y + ROW_H - 4.5),
                    if head { bold.clone() } else { regular.clone() },
                    CELL_SIZE,
                    &fitted,
                    false,
                    TextDirection::Auto,
                );
                x += width;
            }
        };
        let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
        draw_row(&mut surface, y, &names, true, false);
        y += ROW_H;
        let mut stripe = false;
        while y + ROW_H <= PAGE_H - MARGIN {
            let Some(row) = rows.next() else { break };
            let cells: Vec<String> = row.iter().map(display).collect();
            draw_row(&mut surface, y, &cells, false, stripe);
            stripe = !stripe;
            y += ROW_H;
        }
        let last = rows.peek().is_none();
        if last && shown < table.rows.len() && y + ROW_H <= PAGE_H - MARGIN + 14.0 {
            surface.set_fill(Some(fill(120, 120, 120)));
            surface.draw_text(
                Point::from_xy(MARGIN, y + 12.0),
                regular.clone(),
                8.5,
                &format!(
                    "The first {shown} of {} rows; the csv and xlsx formats carry them all.",
                    table.rows.len()
                ),
                false,
                TextDirection::Auto,
            );
        }
        surface.set_fill(Some(fill(140, 140, 140)));
        surface.draw_text(
            Point::from_xy(MARGIN, PAGE_H - 18.0),
            regular.clone(),
            7.5,
            &format!("{} · page {page_number}", header.title),
            false,
            TextDirection::Auto,
        );
        surface.finish();
        page.finish();
        if last {
            break;
        }
    }
    let bytes = document
        .finish()
        .map_err(|e| format!("the PDF cannot be written: {e:?}"))?;
    Ok(File {
        bytes,
        content_type: "application/pdf",
        extension: "pdf",
    })
}

/// A cell as shown in the PDF table: numbers grouped, floats with two decimals.
fn display(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_f64() => n
            .as_f64()
            .map(|f| format!("{f:.2}"))
            .unwrap_or_else(|| n.to_string()),
        other => text(other),
    }
}

/// Column widths over the printable width, in proportion to their content (capped).
fn column_widths(table: &Table, measure: &Measure, shown: usize) -> Vec<f32> {
    let available = PAGE_W - 2.0 * MARGIN;
    if table.columns.is_empty() {
        return Vec::new();
    }
    let wanted: Vec<f32> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let content = table.rows[..shown]
                .iter()
                .take(200)
                .map(|r| measure.width(&display(&r[i]), CELL_SIZE))
                .fold(measure.width(&c.name, CELL_SIZE), f32::max);
            (content + 10.0).clamp(40.0, 260.0)
        })
        .collect();
    let total: f32 = wanted.iter().sum();
    let scale = available / total;
    wanted.iter().map(|w| w * scale.min(1.6)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
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

    #[test]
    fn short_numbers_on_axes() {
        assert_eq!(short_number(12_500.0), "12.5k");
        assert_eq!(short_number(3_000_000.0), "3M");
        assert_eq!(short_number(42.0), "42");
    }
}
