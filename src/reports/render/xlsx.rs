//! The XLSX report: a typed worksheet of the data and a sheet describing the report.

use serde_json::Value;

use super::{number, text, File, Header, Kind, RenderError, Table};

/// Rows a worksheet holds below its header.
pub const XLSX_MAX_ROWS: usize = 1_048_575;

pub fn xlsx(header: &Header, table: &Table) -> Result<File, RenderError> {
    use rust_xlsxwriter::{Color, ExcelDateTime, Format, FormatBorder, Workbook};
    let error = RenderError::Xlsx;
    if table.rows.len() > XLSX_MAX_ROWS {
        return Err(RenderError::TooLarge(format!(
            "{} rows do not fit a worksheet ({XLSX_MAX_ROWS} at most); use csv",
            table.rows.len()
        )));
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
        let c = u16::try_from(c).map_err(|_| RenderError::TooLarge("too many columns".into()))?;
        sheet
            .write_string_with_format(0, c, &column.name, &head)
            .map_err(error)?;
    }
    for (r, row) in table.rows.iter().enumerate() {
        let r = u32::try_from(r + 1).map_err(|_| RenderError::TooLarge("too many rows".into()))?;
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
