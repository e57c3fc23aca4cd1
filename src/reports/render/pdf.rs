//! The PDF report: A4 landscape pages with the title, the parameters, the chart and the table.

use std::sync::Arc;

use serde_json::Value;

use super::chart::{chart_data, chart_pixels, ChartSpec};
use super::{text, File, Header, RenderError, Table};

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
) -> Result<File, RenderError> {
    use krilla::color::rgb;
    use krilla::geom::{PathBuilder, Point, Rect, Size, Transform};
    use krilla::page::PageSettings;
    use krilla::paint::Fill;
    use krilla::text::{Font, TextDirection};

    let regular = Font::new(dejavu::sans::regular().to_vec().into(), 0)
        .ok_or_else(|| RenderError::Pdf("the report font cannot be read".into()))?;
    let bold = Font::new(dejavu::sans::bold().to_vec().into(), 0)
        .ok_or_else(|| RenderError::Pdf("the report font cannot be read".into()))?;
    let measure = Measure::new(dejavu::sans::regular())
        .ok_or_else(|| RenderError::Pdf("the report font cannot be read".into()))?;
    let measure_bold = Measure::new(dejavu::sans::bold())
        .ok_or_else(|| RenderError::Pdf("the report font cannot be read".into()))?;
    let fill = |r, g, b| Fill {
        paint: rgb::Color::new(r, g, b).into(),
        ..Fill::default()
    };
    let page_settings = || {
        PageSettings::from_wh(PAGE_W, PAGE_H)
            .ok_or_else(|| RenderError::Pdf("bad page size".into()))
    };

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
                    )
                    .map_err(RenderError::Pdf)?;
                    let draw_w = PAGE_W - 2.0 * MARGIN;
                    let draw_h = draw_w * h as f32 / w as f32;
                    surface.push_transform(&Transform::from_translate(MARGIN, y));
                    surface.draw_image(
                        image,
                        Size::from_wh(draw_w, draw_h)
                            .ok_or_else(|| RenderError::Pdf("bad chart size".into()))?,
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
        .map_err(|e| RenderError::Pdf(format!("{e:?}")))?;
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
