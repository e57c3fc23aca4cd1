//! A decoder for ClickHouse's Native format, as clickhouse-go reads it in HTTP mode: enough types
//! to check what Grafana's driver would see (strings, integers, floats, dates, nullables).

/// One decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    UInt(u64),
    Int(i64),
    Float(f64),
    Null,
}

impl Value {
    pub fn as_str(&self) -> &str {
        match self {
            Value::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    pub fn as_u64(&self) -> u64 {
        match self {
            Value::UInt(n) => *n,
            Value::Int(n) => u64::try_from(*n).unwrap(),
            other => panic!("not an integer: {other:?}"),
        }
    }
}

/// A decoded result: column names and types, and rows.
#[derive(Debug, Default)]
pub struct Table {
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<Value>>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        out
    }

    fn varint(&mut self) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }

    fn string(&mut self) -> String {
        let len = self.varint() as usize;
        String::from_utf8(self.take(len).to_vec()).unwrap()
    }

    fn uint(&mut self, width: usize) -> u64 {
        let mut buf = [0u8; 8];
        buf[..width].copy_from_slice(self.take(width));
        u64::from_le_bytes(buf)
    }

    fn value(&mut self, ty: &str) -> Value {
        match ty {
            "String" => Value::Str(self.string()),
            "UInt8" | "Bool" => Value::UInt(self.uint(1)),
            "UInt16" | "Date" => Value::UInt(self.uint(2)),
            "UInt32" | "DateTime" => Value::UInt(self.uint(4)),
            "UInt64" => Value::UInt(self.uint(8)),
            "Int8" => Value::Int(i64::from(self.uint(1) as u8 as i8)),
            "Int16" => Value::Int(i64::from(self.uint(2) as u16 as i16)),
            "Int32" => Value::Int(i64::from(self.uint(4) as u32 as i32)),
            "Int64" => Value::Int(self.uint(8) as i64),
            "Float32" => Value::Float(f64::from(f32::from_bits(self.uint(4) as u32))),
            "Float64" => Value::Float(f64::from_bits(self.uint(8))),
            t if t.starts_with("DateTime(") => Value::UInt(self.uint(4)),
            t if t.starts_with("FixedString(") => {
                let n: usize = t[12..t.len() - 1].parse().unwrap();
                Value::Str(String::from_utf8_lossy(self.take(n)).into_owned())
            }
            other => panic!("the test decoder does not read {other}"),
        }
    }

    fn column(&mut self, ty: &str, rows: usize) -> Vec<Value> {
        if let Some(inner) = ty
            .strip_prefix("Nullable(")
            .and_then(|t| t.strip_suffix(')'))
        {
            let nulls: Vec<bool> = (0..rows).map(|_| self.take(1)[0] != 0).collect();
            let values = self.column(inner, rows);
            return values
                .into_iter()
                .zip(nulls)
                .map(|(v, null)| if null { Value::Null } else { v })
                .collect();
        }
        (0..rows).map(|_| self.value(ty)).collect()
    }
}

/// Decodes a Native body written for `revision` (the `client_protocol_version` sent; 0 if none).
pub fn decode(bytes: &[u8], revision: u64) -> Table {
    let mut reader = Reader { bytes, at: 0 };
    let mut table = Table::default();
    while reader.at < bytes.len() {
        if revision > 0 {
            // Block info: field 1 (is_overflows), field 2 (bucket_num), 0.
            loop {
                match reader.varint() {
                    0 => break,
                    1 => {
                        reader.take(1);
                    }
                    2 => {
                        reader.take(4);
                    }
                    other => panic!("unknown block info field {other}"),
                }
            }
        }
        let columns = reader.varint() as usize;
        let rows = reader.varint() as usize;
        let mut data = Vec::new();
        let mut names = Vec::new();
        for _ in 0..columns {
            let name = reader.string();
            let ty = reader.string();
            if revision >= 54454 {
                assert_eq!(reader.take(1)[0], 0, "custom serialization is not expected");
            }
            data.push(reader.column(&ty, rows));
            names.push((name, ty));
        }
        if table.columns.is_empty() {
            table.columns = names;
        }
        for row in 0..rows {
            table
                .rows
                .push(data.iter().map(|c| c[row].clone()).collect());
        }
    }
    table
}
