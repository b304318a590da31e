//! The CSV source's fast path for plain text. A block with no quote character, no carriage
//! return and no blank line is cut at delimiters and newlines in one pass, and its columns
//! are parsed with Arrow's own parsers, so every value and null is the one arrow-csv gives.
//! Anything else returns `None` and arrow-csv decodes the block, errors and rejects included.

use std::sync::Arc;

use arrow::array::{ArrayBuilder, ArrayRef, PrimitiveBuilder, StringBuilder, StringViewBuilder};
use arrow::compute::kernels::cast_utils::Parser;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Int8Type, SchemaRef, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow::record_batch::RecordBatch;

/// How to read the plain blocks of one file: which fields become which columns.
#[derive(Debug, Clone)]
pub(crate) struct PlainPlan {
    /// The type of every field of a record, by position; `None` for fields not read.
    fields: Vec<Option<DataType>>,
    /// The output columns' field positions, in output order.
    projection: Vec<usize>,
    output: SchemaRef,
    delimiter: u8,
    quote: u8,
}

impl PlainPlan {
    /// A plan when every column read has a parser here and the delimiter is one ASCII byte;
    /// `None` sends every block to arrow-csv.
    pub(crate) fn new(
        file_schema: &SchemaRef,
        projection: &[usize],
        output: SchemaRef,
        delimiter: u8,
        quote: u8,
    ) -> Option<Self> {
        // A one-field record cannot tell a blank line from an empty value: leave it to
        // arrow-csv. A non-ASCII delimiter could fall inside a character.
        if file_schema.fields().len() < 2 || !delimiter.is_ascii() || delimiter == b'\n' {
            return None;
        }
        let mut fields = vec![None; file_schema.fields().len()];
        for &index in projection {
            let data_type = file_schema.field(index).data_type();
            if !supported(data_type) || fields[index].is_some() {
                return None;
            }
            fields[index] = Some(data_type.clone());
        }
        Some(PlainPlan {
            fields,
            projection: projection.to_vec(),
            output,
            delimiter,
            quote,
        })
    }

    /// The block's records as batches of at most `batch_rows` rows, or `None` when the
    /// block is not plain or a value does not parse (arrow-csv then says why).
    pub(crate) fn decode(&self, bytes: &[u8], batch_rows: usize) -> Option<Vec<RecordBatch>> {
        if memchr::memchr2(self.quote, b'\r', bytes).is_some() {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let capacity = bytes.len() / (8 * self.fields.len()) + 1;
        let mut builders: Vec<Option<Box<dyn FieldBuilder>>> = self
            .fields
            .iter()
            .map(|t| t.as_ref().map(|t| builder(t, capacity)))
            .collect();
        let width = self.fields.len();
        let mut field = 0;
        let mut start = 0;
        let mut push = |field: usize, value: &str| -> bool {
            match builders.get_mut(field) {
                Some(Some(builder)) => builder.push(value),
                Some(None) => true,
                None => false,
            }
        };
        for at in memchr::memchr2_iter(self.delimiter, b'\n', bytes) {
            if !push(field, &text[start..at]) {
                return None;
            }
            field += 1;
            if bytes[at] == b'\n' {
                // Also refuses a blank line: it is one empty field, and a plan has two or more.
                if field != width {
                    return None;
                }
                field = 0;
            }
            start = at + 1;
        }
        // The file's last record may have no newline.
        let unterminated = start < bytes.len() || field > 0;
        if unterminated && (!push(field, &text[start..]) || field + 1 != width) {
            return None;
        }
        let columns: Vec<ArrayRef> = self
            .projection
            .iter()
            .map(|&index| {
                builders[index]
                    .as_mut()
                    .map(|b| b.finish())
                    .expect("every projected field has a builder")
            })
            .collect();
        let batch = RecordBatch::try_new(self.output.clone(), columns).ok()?;
        let rows = batch.num_rows();
        let step = batch_rows.max(1);
        Some(
            (0..rows)
                .step_by(step)
                .map(|offset| batch.slice(offset, step.min(rows - offset)))
                .collect(),
        )
    }
}

fn supported(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Int8 | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Utf8
            | Utf8View
    )
}

/// One column being built from a block's fields.
trait FieldBuilder {
    /// Appends a field's text; `false` when it does not parse.
    fn push(&mut self, value: &str) -> bool;
    fn finish(&mut self) -> ArrayRef;
}

fn builder(data_type: &DataType, capacity: usize) -> Box<dyn FieldBuilder> {
    fn primitive<T: ArrowPrimitiveType + Parser>(capacity: usize) -> Box<dyn FieldBuilder> {
        Box::new(PrimitiveBuilder::<T>::with_capacity(capacity))
    }
    match data_type {
        DataType::Int8 => primitive::<Int8Type>(capacity),
        DataType::Int16 => primitive::<Int16Type>(capacity),
        DataType::Int32 => primitive::<Int32Type>(capacity),
        DataType::Int64 => primitive::<Int64Type>(capacity),
        DataType::UInt8 => primitive::<UInt8Type>(capacity),
        DataType::UInt16 => primitive::<UInt16Type>(capacity),
        DataType::UInt32 => primitive::<UInt32Type>(capacity),
        DataType::UInt64 => primitive::<UInt64Type>(capacity),
        DataType::Float32 => primitive::<Float32Type>(capacity),
        DataType::Float64 => primitive::<Float64Type>(capacity),
        DataType::Utf8View => Box::new(StringViewBuilder::with_capacity(capacity)),
        _ => Box::new(StringBuilder::with_capacity(capacity, capacity * 8)),
    }
}

// arrow-csv reads an empty field as null (its default null rule) and parses the rest with
// `Parser::parse`; so do these.
impl<T: ArrowPrimitiveType + Parser> FieldBuilder for PrimitiveBuilder<T> {
    fn push(&mut self, value: &str) -> bool {
        if value.is_empty() {
            self.append_null();
            return true;
        }
        match T::parse(value) {
            Some(v) => {
                self.append_value(v);
                true
            }
            None => false,
        }
    }

    fn finish(&mut self) -> ArrayRef {
        Arc::new(PrimitiveBuilder::finish(self))
    }
}

// A string field: an empty one is null, as arrow-csv reads it, and any other text is kept.
macro_rules! string_field_builder {
    ($($builder:ty),+) => {$(
        impl FieldBuilder for $builder {
            fn push(&mut self, value: &str) -> bool {
                if value.is_empty() {
                    self.append_null();
                } else {
                    self.append_value(value);
                }
                true
            }

            fn finish(&mut self) -> ArrayRef {
                ArrayBuilder::finish(self)
            }
        }
    )+};
}

string_field_builder!(StringBuilder, StringViewBuilder);
