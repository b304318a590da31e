//! The columns of a stream, and whether a message fits them exactly. A declared schema
//! (`--schema FILE`) is fixed: a message that does not fit is set aside with the reason.
//! An inferred one only grows, never changing a value: a field first seen later adds a
//! column, an integer column that receives a fraction becomes Float64; anything else that
//! does not fit (text where a number was, an object where a scalar was) is set aside.
//! The schema in use is kept in the output folder (`_stream_schema.json`), so a restart
//! goes on with it instead of inferring again.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice::sink::{describe_schema, ColumnInfo};

use crate::error::{Result, StreamError};

pub const SCHEMA_FILE: &str = "_stream_schema.json";

/// Largest integer every smaller one of which a Float64 holds exactly.
const F64_EXACT: u64 = 1 << 53;
const F32_EXACT: u64 = 1 << 24;
const F16_EXACT: u64 = 1 << 11;

/// The columns of a stream and where they came from.
#[derive(Debug, Clone)]
pub struct StreamSchema {
    pub schema: SchemaRef,
    /// Declared by the user: fixed. Otherwise inferred: may grow (see the module docs).
    pub declared: bool,
}

/// How a message stands against the schema.
#[derive(Debug, PartialEq)]
pub enum Fit {
    /// Its values go into the columns exactly.
    Exact,
    /// It needs the inferred schema to grow first (a new column, a widened type).
    Grow,
    /// It cannot be carried exactly: the reason.
    Refused(String),
}

#[derive(Serialize, Deserialize)]
struct SchemaFile {
    declared: bool,
    columns: Vec<ColumnInfo>,
}

impl StreamSchema {
    /// Reads a declared schema: a JSON list of `{"name", "type", "nullable"}` (or an object
    /// with such a list as `columns`/`fields`), types as Arrow writes them (`Int64`,
    /// `Float64`, `Utf8`, `Boolean`, `Timestamp(Microsecond, None)`, `List(Int64)`, ...)
    /// or as the usual short names (`int64`, `double`, `string`, `bool`, `timestamp`).
    pub fn declared_from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| StreamError::io(path, e))?;
        let bad = |reason: String| StreamError::Schema {
            path: path.to_path_buf(),
            reason,
        };
        let value: Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let list = match &value {
            Value::Array(list) => list,
            Value::Object(o) => match o.get("columns").or_else(|| o.get("fields")) {
                Some(Value::Array(list)) => list,
                _ => {
                    return Err(bad(
                        "expected a list of columns, or {\"columns\": [...]}".into()
                    ))
                }
            },
            _ => return Err(bad("expected a list of columns".into())),
        };
        let mut fields = Vec::with_capacity(list.len());
        for (i, column) in list.iter().enumerate() {
            let Value::Object(column) = column else {
                return Err(bad(format!(
                    "column {i}: expected {{\"name\": ..., \"type\": ...}}"
                )));
            };
            let name = match column.get("name") {
                Some(Value::String(name)) if !name.is_empty() => name.clone(),
                _ => return Err(bad(format!("column {i}: no \"name\""))),
            };
            let type_text = match column.get("type").or_else(|| column.get("data_type")) {
                Some(Value::String(t)) => t.clone(),
                _ => return Err(bad(format!("column {name:?}: no \"type\""))),
            };
            let data_type = parse_type(&type_text)
                .map_err(|reason| bad(format!("column {name:?}: {reason}")))?;
            if !checked_type(&data_type) {
                return Err(bad(format!(
                    "column {name:?}: {data_type} is not supported for streams (a message's \
                     value could not be checked to be kept exactly); use integers, floats, \
                     text, booleans, Timestamp, Date32, Decimal, lists or structs of them"
                )));
            }
            let nullable = match column.get("nullable") {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(bad(format!(
                        "column {name:?}: \"nullable\" is true or false"
                    )))
                }
            };
            if fields.iter().any(|f: &Field| f.name() == &name) {
                return Err(bad(format!("column {name:?} is listed twice")));
            }
            fields.push(Field::new(name, data_type, nullable));
        }
        if fields.is_empty() {
            return Err(bad("no columns".into()));
        }
        Ok(StreamSchema {
            schema: Arc::new(Schema::new(fields)),
            declared: true,
        })
    }

    /// The schema an earlier run of the stream into `dir` used: its `_stream_schema.json`,
    /// or for a folder written before that file existed, its manifest's columns.
    pub fn stored(dir: &Path, manifest_columns: &[ColumnInfo]) -> Result<Option<Self>> {
        let path = dir.join(SCHEMA_FILE);
        let (declared, columns) = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let file: SchemaFile =
                    serde_json::from_str(&text).map_err(|e| StreamError::Schema {
                        path: path.clone(),
                        reason: format!("cannot be read ({e}); remove it to infer again"),
                    })?;
                (file.declared, file.columns)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if manifest_columns.is_empty() {
                    return Ok(None);
                }
                (false, manifest_columns.to_vec())
            }
            Err(e) => return Err(StreamError::io(&path, e)),
        };
        let schema = from_columns(&columns).map_err(|reason| StreamError::Schema {
            path: path.clone(),
            reason,
        })?;
        Ok(Some(StreamSchema { schema, declared }))
    }

    /// Keeps the schema in `dir` (written aside, synced, renamed) before parts use it.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let file = SchemaFile {
            declared: self.declared,
            columns: describe_schema(&self.schema),
        };
        let path = dir.join(SCHEMA_FILE);
        let text = serde_json::to_string_pretty(&file).map_err(|e| StreamError::io(&path, e))?;
        write_synced(&path, text.as_bytes())
    }

    /// The schema inferred from the first well-formed messages (folded as [`Self::grown`]
    /// would); `None` if no message has a value to type.
    pub fn infer<'a>(objects: impl IntoIterator<Item = &'a Map<String, Value>>) -> Option<Self> {
        let mut schema = StreamSchema {
            schema: Arc::new(Schema::empty()),
            declared: false,
        };
        for object in objects {
            if let Some(grown) = schema.grown(object) {
                schema = grown;
            }
        }
        (!schema.schema.fields().is_empty()).then_some(schema)
    }

    /// How `object` fits.
    pub fn fit(&self, object: &Map<String, Value>) -> Fit {
        let mut grow = false;
        for field in self.schema.fields() {
            let missing = object.get(field.name()).is_none_or(Value::is_null);
            if missing && !field.is_nullable() {
                return Fit::Refused(format!(
                    "field {:?} is missing (declared not null)",
                    field.name()
                ));
            }
        }
        for (name, value) in object {
            if value.is_null() {
                continue;
            }
            let Some(field) = self.schema.field_with_name(name).ok() else {
                if self.declared {
                    return Fit::Refused(format!("field {name:?} is not in the declared schema"));
                }
                if let Err(reason) = infer_value(value).map_err(|r| format!("field {name:?}: {r}"))
                {
                    return Fit::Refused(reason);
                }
                grow = true;
                continue;
            };
            match fit_value(field.data_type(), value, self.declared) {
                ValueFit::Exact => {}
                ValueFit::Widen(_) => grow = true,
                ValueFit::No(reason) => {
                    return Fit::Refused(format!(
                        "field {name:?}: {reason} (column {})",
                        field.data_type()
                    ))
                }
            }
        }
        if grow {
            Fit::Grow
        } else {
            Fit::Exact
        }
    }

    /// The inferred schema grown so that `object` fits exactly (new columns after the
    /// old ones, widened types); `None` if it is declared or `object` cannot fit anyway.
    pub fn grown(&self, object: &Map<String, Value>) -> Option<StreamSchema> {
        if self.declared {
            return None;
        }
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        grow_fields(&mut fields, object).ok()?;
        Some(StreamSchema {
            schema: Arc::new(Schema::new(fields)),
            declared: false,
        })
    }
}

/// Adds to `fields` what `object` needs, or says why it cannot fit. A field seen only as
/// null gets a Null column (it takes the first type that comes later), so a nested
/// object's null fields are not lost.
fn grow_fields(fields: &mut Vec<Field>, object: &Map<String, Value>) -> Result<(), String> {
    for (name, value) in object {
        match fields.iter_mut().find(|f| f.name() == name) {
            Some(field) => match fit_value(field.data_type(), value, false) {
                ValueFit::Exact => {}
                ValueFit::Widen(wider) => *field = field.clone().with_data_type(wider),
                ValueFit::No(reason) => return Err(reason),
            },
            None => {
                let data_type = infer_value(value)?.unwrap_or(DataType::Null);
                fields.push(Field::new(name, data_type, true));
            }
        }
    }
    Ok(())
}

enum ValueFit {
    Exact,
    /// Fits exactly once the column has this (wider) type; only for inferred schemas.
    Widen(DataType),
    No(String),
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 40 {
        format!(
            "{}...",
            &text[..text.char_indices().nth(37).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        text
    }
}

/// Whether an integer fits an integer type's range.
fn int_in_range(data_type: &DataType, i: i128) -> bool {
    let (lo, hi): (i128, i128) = match data_type {
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
        DataType::UInt8 => (0, u8::MAX.into()),
        DataType::UInt16 => (0, u16::MAX.into()),
        DataType::UInt32 => (0, u32::MAX.into()),
        DataType::UInt64 => (0, u64::MAX.into()),
        _ => return false,
    };
    (lo..=hi).contains(&i)
}

/// The number as an exact integer, if it is one (`3` and `3.0` are; `3.5` is not).
fn as_integer(n: &serde_json::Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.into());
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 1e38).then_some(f as i128)
}

fn fit_value(data_type: &DataType, value: &Value, declared: bool) -> ValueFit {
    use DataType::*;
    if value.is_null() {
        return ValueFit::Exact;
    }
    let no = |what: String| ValueFit::No(what);
    match data_type {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => {
            let Value::Number(n) = value else {
                return no(format!(
                    "{} {} where a number was",
                    kind(value),
                    shown(value)
                ));
            };
            // A literal with a fraction or exponent (`2000.5`, `3.0`) is a float: an
            // inferred column widens for it; a declared one refuses it (the float the text
            // parses to need not be the integer the text means: `2.0000000000000001`).
            let float_literal = n.is_f64();
            if float_literal && declared {
                return no(format!("{} is not an integer literal", shown(value)));
            }
            if float_literal {
                return match data_type {
                    Int64 => match fit_value(&Float64, value, false) {
                        ValueFit::Exact => ValueFit::Widen(Float64),
                        other => other,
                    },
                    _ => no(format!("{} is not an integer", shown(value))),
                };
            }
            match as_integer(n) {
                Some(i) if int_in_range(data_type, i) => ValueFit::Exact,
                Some(_) => no(format!("{} is out of range", shown(value))),
                None => no(format!("{} is not an integer", shown(value))),
            }
        }
        Float16 | Float32 | Float64 => {
            let Value::Number(n) = value else {
                return no(format!(
                    "{} {} where a number was",
                    kind(value),
                    shown(value)
                ));
            };
            let exact_below = match data_type {
                Float64 => F64_EXACT,
                Float32 => F32_EXACT,
                _ => F16_EXACT,
            };
            if let Some(i) = n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
            {
                if i.unsigned_abs() > u128::from(exact_below) {
                    return no(format!(
                        "the integer {i} cannot be held exactly as {data_type}"
                    ));
                }
                return ValueFit::Exact;
            }
            match (data_type, n.as_f64()) {
                (Float64, Some(_)) => ValueFit::Exact,
                (Float32, Some(f)) if f64::from(f as f32) == f => ValueFit::Exact,
                (Float16, Some(f)) if f64::from(half_round_trip(f)) == f => ValueFit::Exact,
                _ => no(format!(
                    "{} cannot be held exactly as {data_type}",
                    shown(value)
                )),
            }
        }
        Utf8 | LargeUtf8 | Utf8View => match value {
            Value::String(_) => ValueFit::Exact,
            other => no(format!("{} {} where text was", kind(other), shown(other))),
        },
        Boolean => match value {
            Value::Bool(_) => ValueFit::Exact,
            other => no(format!(
                "{} {} where a boolean was",
                kind(other),
                shown(other)
            )),
        },
        List(item) | LargeList(item) => {
            let Value::Array(values) = value else {
                return no(format!("{} {} where a list was", kind(value), shown(value)));
            };
            let mut item_type = item.data_type().clone();
            for v in values {
                match fit_value(&item_type, v, declared) {
                    ValueFit::Exact => {}
                    ValueFit::Widen(wider) => item_type = wider,
                    ValueFit::No(reason) => return no(format!("in a list: {reason}")),
                }
            }
            if &item_type == item.data_type() {
                ValueFit::Exact
            } else {
                let field = Arc::new(item.as_ref().clone().with_data_type(item_type));
                ValueFit::Widen(match data_type {
                    LargeList(_) => LargeList(field),
                    _ => List(field),
                })
            }
        }
        Struct(fields) => {
            let Value::Object(object) = value else {
                return no(format!(
                    "{} {} where an object was",
                    kind(value),
                    shown(value)
                ));
            };
            let mut grown: Vec<Field> = fields.iter().map(|f| f.as_ref().clone()).collect();
            if declared {
                for (name, v) in object {
                    let Some(field) = fields.iter().find(|f| f.name() == name) else {
                        if v.is_null() {
                            continue;
                        }
                        return no(format!("field {name:?} is not in the declared object"));
                    };
                    if let ValueFit::No(reason) = fit_value(field.data_type(), v, true) {
                        return no(format!("in field {name:?}: {reason}"));
                    }
                }
                return ValueFit::Exact;
            }
            match grow_fields(&mut grown, object) {
                Err(reason) => no(format!("in an object: {reason}")),
                Ok(())
                    if grown.len() == fields.len()
                        && grown
                            .iter()
                            .zip(fields.iter())
                            .all(|(a, b)| a == b.as_ref()) =>
                {
                    ValueFit::Exact
                }
                Ok(()) => ValueFit::Widen(Struct(Fields::from(grown))),
            }
        }
        // A column seen only as null (or as empty lists) so far takes the first type.
        Null if !declared => match infer_value(value) {
            Ok(Some(data_type)) => ValueFit::Widen(data_type),
            Ok(None) => ValueFit::Exact,
            Err(reason) => no(reason),
        },
        Null => no(format!("{} where only nulls are allowed", kind(value))),
        Timestamp(unit, _) => match value {
            Value::Number(n) if !n.is_f64() => ValueFit::Exact,
            Value::String(text) => {
                let most = match unit {
                    arrow::datatypes::TimeUnit::Second => 0,
                    arrow::datatypes::TimeUnit::Millisecond => 3,
                    arrow::datatypes::TimeUnit::Microsecond => 6,
                    arrow::datatypes::TimeUnit::Nanosecond => 9,
                };
                match fraction_digits(text) {
                    Some(digits) if digits > most => no(format!(
                        "{} has {digits} fractional digits; {data_type} holds {most}",
                        shown(value)
                    )),
                    Some(_) => ValueFit::Exact,
                    None => no(format!("{} is not a date and time", shown(value))),
                }
            }
            other => no(format!(
                "{} {} where a timestamp (text or whole number) was",
                kind(other),
                shown(other)
            )),
        },
        Date32 => match value {
            Value::Number(n) if !n.is_f64() => ValueFit::Exact,
            Value::String(text) if is_plain_date(text) => ValueFit::Exact,
            other => no(format!(
                "{} {} where a date (YYYY-MM-DD) was",
                kind(other),
                shown(other)
            )),
        },
        Decimal128(precision, scale) | Decimal256(precision, scale) => {
            let text = match value {
                Value::Number(n) => n.to_string(),
                Value::String(t) => t.clone(),
                other => {
                    return no(format!(
                        "{} {} where a decimal was",
                        kind(other),
                        shown(other)
                    ))
                }
            };
            match decimal_digits(&text) {
                Some((whole, fraction))
                    if fraction <= (*scale).max(0) as usize
                        && whole + (*scale).max(0) as usize <= *precision as usize =>
                {
                    ValueFit::Exact
                }
                Some(_) => no(format!("{} does not fit {data_type} exactly", shown(value))),
                None => no(format!("{} is not a plain decimal number", shown(value))),
            }
        }
        // Declared only (`checked_type` refuses the others when the schema is read).
        _ => no(format!("{data_type} cannot be checked")),
    }
}

/// Digits after the seconds of `YYYY-MM-DD[( |T)HH:MM:SS[.fff...]][zone]`; `None` if it is
/// not that shape.
fn fraction_digits(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.len() < 10 || !is_plain_date(&text[..10]) {
        return None;
    }
    if bytes.len() == 10 {
        return Some(0);
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes.len() < 19 {
        return None;
    }
    let time = &bytes[11..19];
    let shape_ok = time.iter().enumerate().all(|(i, b)| match i {
        2 | 5 => *b == b':',
        _ => b.is_ascii_digit(),
    });
    if !shape_ok {
        return None;
    }
    match bytes.get(19) {
        Some(b'.') => Some(
            bytes[20..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count(),
        ),
        _ => Some(0),
    }
}

fn is_plain_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// Digits before and after the point of a plain decimal (`-12.340`), ignoring leading
/// zeros of the whole part; `None` for anything else (exponents included).
fn decimal_digits(text: &str) -> Option<(usize, usize)> {
    let t = text.trim();
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (whole, fraction) = t.split_once('.').unwrap_or((t, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((whole.trim_start_matches('0').len(), fraction.len()))
}

/// Whether `fit_value` checks every value of a declared column of this type (the others
/// would be converted by the JSON reader in ways that can change a value).
fn checked_type(data_type: &DataType) -> bool {
    use DataType::*;
    match data_type {
        Int8
        | Int16
        | Int32
        | Int64
        | UInt8
        | UInt16
        | UInt32
        | UInt64
        | Float16
        | Float32
        | Float64
        | Utf8
        | LargeUtf8
        | Utf8View
        | Boolean
        | Timestamp(_, _)
        | Date32
        | Decimal128(_, _)
        | Decimal256(_, _)
        | Null => true,
        List(item) | LargeList(item) => checked_type(item.data_type()),
        Struct(fields) => fields.iter().all(|f| checked_type(f.data_type())),
        _ => false,
    }
}

/// `f` through a 16-bit float and back (round to nearest even), without a `half` crate.
fn half_round_trip(f: f64) -> f32 {
    // Values a Float16 holds exactly have at most 11 significant bits and a bounded
    // exponent; anything else is reported as not exact by returning a different value.
    let bits = 11;
    if f == 0.0 || !f.is_finite() {
        return f as f32;
    }
    let exp = f.abs().log2().floor() as i32;
    if !(-14..=15).contains(&exp) {
        return f32::NAN;
    }
    let scale = 2f64.powi(bits - 1 - exp);
    ((f * scale).round() / scale) as f32
}

/// The column type a first value gets; `None` for values that say nothing (empty lists).
fn infer_value(value: &Value) -> Result<Option<DataType>, String> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(_) => DataType::Boolean,
        Value::String(_) => DataType::Utf8,
        Value::Number(n) if n.is_f64() => DataType::Float64,
        Value::Number(n) => match n.as_i64() {
            Some(_) => DataType::Int64,
            None => return Err(format!("the integer {n} is out of Int64's range")),
        },
        Value::Array(values) => {
            let mut item: Option<DataType> = None;
            for v in values {
                item = match (item, infer_value(v)?) {
                    (None, t) => t,
                    (Some(t), None) => Some(t),
                    (Some(t), Some(_)) => match fit_value(&t, v, false) {
                        ValueFit::Exact => Some(t),
                        ValueFit::Widen(wider) => Some(wider),
                        ValueFit::No(reason) => return Err(format!("in a list: {reason}")),
                    },
                };
            }
            // An empty list (or one of nulls) gives its items no type yet: Null items,
            // which take the first type that comes.
            let item = item.unwrap_or(DataType::Null);
            DataType::List(Arc::new(Field::new_list_field(item, true)))
        }
        Value::Object(object) => {
            let mut fields = Vec::new();
            grow_fields(&mut fields, object)?;
            if fields.is_empty() {
                // Parquet has no struct without fields.
                return Err(
                    "an empty object gives its column no fields to type; declare the column \
                     with --schema"
                        .into(),
                );
            }
            DataType::Struct(Fields::from(fields))
        }
    }))
}

/// A type as Arrow writes it, or one of the usual short names.
fn parse_type(text: &str) -> Result<DataType, String> {
    let short = match text.trim().to_ascii_lowercase().as_str() {
        "int" | "int64" | "long" | "bigint" | "integer" => Some(DataType::Int64),
        "int32" => Some(DataType::Int32),
        "float" | "float64" | "double" => Some(DataType::Float64),
        "float32" => Some(DataType::Float32),
        "string" | "str" | "text" | "utf8" => Some(DataType::Utf8),
        "bool" | "boolean" => Some(DataType::Boolean),
        "timestamp" => Some(DataType::Timestamp(
            arrow::datatypes::TimeUnit::Microsecond,
            None,
        )),
        "date" => Some(DataType::Date32),
        _ => None,
    };
    match short {
        Some(t) => Ok(t),
        None => DataType::from_str(text.trim()).map_err(|e| format!("unknown type {text:?} ({e})")),
    }
}

fn from_columns(columns: &[ColumnInfo]) -> Result<SchemaRef, String> {
    let mut fields = Vec::with_capacity(columns.len());
    for c in columns {
        let data_type = DataType::from_str(&c.data_type)
            .map_err(|e| format!("column {:?}: type {:?}: {e}", c.name, c.data_type))?;
        fields.push(Field::new(&c.name, data_type, c.nullable));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Writes `bytes` to `path` so a crash leaves the old file or the new one, complete.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(|e| StreamError::io(&tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| StreamError::io(&tmp, e))?;
    file.sync_all().map_err(|e| StreamError::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| StreamError::io(path, e))?;
    // The rename itself is durable once the folder is synced.
    sluice::sink::sync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => panic!("an object"),
        }
    }

    fn inferred(v: Value) -> StreamSchema {
        StreamSchema::infer([&object(v)]).expect("a schema")
    }

    #[test]
    fn inference_grows_but_never_changes_a_value() {
        let s = inferred(json!({"id": 1, "value": 2000, "name": "a", "gone": null}));
        assert_eq!(s.schema.fields().len(), 4);
        assert_eq!(
            s.schema.field_with_name("gone").expect("gone").data_type(),
            &DataType::Null,
            "a field seen only as null takes the first type that comes"
        );
        assert_eq!(s.fit(&object(json!({"gone": "now text"}))), Fit::Grow);
        let typed = s
            .grown(&object(json!({"gone": "now text"})))
            .expect("grows");
        assert_eq!(
            typed
                .schema
                .field_with_name("gone")
                .expect("gone")
                .data_type(),
            &DataType::Utf8
        );
        assert_eq!(s.fit(&object(json!({"id": 2, "value": 7}))), Fit::Exact);
        assert_eq!(s.fit(&object(json!({"id": 2, "value": 2000.5}))), Fit::Grow);
        let wider = s.grown(&object(json!({"value": 2000.5}))).expect("grows");
        assert_eq!(
            wider
                .schema
                .field_with_name("value")
                .expect("value")
                .data_type(),
            &DataType::Float64
        );
        assert_eq!(wider.fit(&object(json!({"value": 3}))), Fit::Exact);
        let Fit::Refused(reason) = wider.fit(&object(json!({"value": 9007199254740993u64}))) else {
            panic!("2^53 + 1 is not exact as Float64");
        };
        assert!(reason.contains("exactly"), "{reason}");
        assert_eq!(s.fit(&object(json!({"late": true}))), Fit::Grow);
        let later = s.grown(&object(json!({"late": true}))).expect("grows");
        assert_eq!(later.schema.fields().len(), 5);
        assert_eq!(later.schema.field(4).name(), "late");
        for (bad, says) in [
            (json!({"value": "7"}), "text \"7\" where a number was"),
            (json!({"name": 7}), "a number 7 where text was"),
            (json!({"name": true}), "a boolean true where text was"),
            (json!({"id": {"a": 1}}), "an object"),
            (json!({"id": [1]}), "a list"),
            (json!({"late": 18446744073709551615u64}), "out of Int64"),
        ] {
            match s.fit(&object(bad.clone())) {
                Fit::Refused(reason) => assert!(reason.contains(says), "{bad}: {reason}"),
                other => panic!("{bad}: {other:?}"),
            }
            assert!(s.grown(&object(bad)).is_none() || says == "out of Int64");
        }
    }

    #[test]
    fn empty_lists_and_nulls_take_the_first_type_and_empty_objects_are_refused() {
        let s = inferred(json!({"id": 1, "tags": [], "meta": {"x": null}}));
        let type_of = |s: &StreamSchema, name: &str| {
            s.schema
                .field_with_name(name)
                .expect(name)
                .data_type()
                .to_string()
        };
        assert_eq!(type_of(&s, "tags"), "List(Null)");
        assert_eq!(type_of(&s, "meta"), "Struct(\"x\": Null)");
        assert_eq!(s.fit(&object(json!({"tags": [], "meta": {}}))), Fit::Exact);
        let grown = s
            .grown(&object(json!({"tags": [1], "meta": {"x": "a"}})))
            .expect("grows");
        assert_eq!(type_of(&grown, "tags"), "List(Int64)");
        assert_eq!(type_of(&grown, "meta"), "Struct(\"x\": Utf8)");
        match s.fit(&object(json!({"other": {}}))) {
            Fit::Refused(reason) => assert!(reason.contains("empty object"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(s.grown(&object(json!({"other": {}}))).is_none());
    }

    #[test]
    fn nested_values_grow_and_refuse_like_columns() {
        let s = inferred(json!({"tags": [1, 2], "at": {"x": 1}}));
        assert_eq!(s.fit(&object(json!({"tags": [3.5]}))), Fit::Grow);
        assert_eq!(s.fit(&object(json!({"at": {"x": 2, "y": "n"}}))), Fit::Grow);
        assert!(matches!(
            s.fit(&object(json!({"tags": ["a"]}))),
            Fit::Refused(_)
        ));
        assert!(matches!(
            s.fit(&object(json!({"at": {"x": "a"}}))),
            Fit::Refused(_)
        ));
    }

    #[test]
    fn declared_schemas_refuse_what_does_not_fit_and_round_trip() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("schema.json");
        std::fs::write(
            &path,
            r#"[{"name": "id", "type": "int64", "nullable": false},
                {"name": "value", "type": "Float64"},
                {"name": "tags", "type": "List(Utf8)"},
                {"name": "at", "type": "timestamp"}]"#,
        )
        .expect("write");
        let s = StreamSchema::declared_from_file(&path).expect("declared");
        assert_eq!(s.fit(&object(json!({"id": 1, "value": 2}))), Fit::Exact);
        for literal in ["3.0", "2.0000000000000001", "1e3"] {
            let o: Value = serde_json::from_str(&format!("{{\"id\": {literal}}}")).expect("json");
            match s.fit(&object(o)) {
                Fit::Refused(reason) => {
                    assert!(reason.contains("not an integer literal"), "{reason}")
                }
                other => panic!("{literal}: {other:?}"),
            }
        }
        for (bad, says) in [
            (json!({"id": 2.5}), "not an integer literal"),
            (json!({"value": 1}), "missing"),
            (json!({"id": 1, "late": 1}), "not in the declared schema"),
            (json!({"id": 1, "value": "1.5"}), "where a number was"),
            (json!({"id": 1, "tags": [1]}), "where text was"),
        ] {
            match s.fit(&object(bad.clone())) {
                Fit::Refused(reason) => assert!(reason.contains(says), "{bad}: {reason}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        s.store(dir.path()).expect("store");
        let back = StreamSchema::stored(dir.path(), &[])
            .expect("read")
            .expect("stored");
        assert_eq!(back.schema, s.schema);
        assert!(back.declared);
        std::fs::write(&path, r#"[{"name": "id", "type": "Integer64"}]"#).expect("write");
        let e = StreamSchema::declared_from_file(&path)
            .expect_err("unknown type")
            .to_string();
        assert!(e.contains("unknown type \"Integer64\""), "{e}");
    }
}
