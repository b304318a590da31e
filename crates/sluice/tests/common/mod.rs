//! Test data and helpers shared by the integration tests.
#![allow(dead_code)]

pub mod model_kit;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use sluice::ProcessedChunk;

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
        Field::new("label", DataType::Utf8, true),
    ]))
}

/// Rows `start..start+n`: id, a value derived from the id (null every 17th), a label.
pub fn batch(start: i64, n: usize) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let values: Vec<Option<f64>> = ids
        .iter()
        .map(|&i| {
            if i % 17 == 0 {
                None
            } else {
                Some(i as f64 * 0.5 - 3.25)
            }
        })
        .collect();
    let labels: Vec<Option<String>> = ids
        .iter()
        .map(|&i| {
            if i % 13 == 0 {
                None
            } else {
                Some(format!("row \"{i}\", ok"))
            }
        })
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)) as ArrayRef,
            Arc::new(Float64Array::from(values)),
            Arc::new(StringArray::from(labels)),
        ],
    )
    .expect("valid batch")
}

/// The test function: keeps the id, doubles the value, adds the label's length.
pub fn transform(batch: &RecordBatch) -> RecordBatch {
    let ids = batch.column(0).clone();
    let values = batch
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("f64");
    let doubled: Float64Array = values.iter().map(|v| v.map(|x| x * 2.0)).collect();
    let labels = batch
        .column(2)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    let lengths: Int64Array = labels.iter().map(|s| s.map(|s| s.len() as i64)).collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("doubled", DataType::Float64, true),
            Field::new("label_len", DataType::Int64, true),
        ])),
        vec![ids, Arc::new(doubled), Arc::new(lengths)],
    )
    .expect("valid output")
}

pub fn ids_of(batch: &RecordBatch) -> Vec<i64> {
    let col = batch
        .column_by_name("id")
        .expect("id column")
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("i64 ids");
    col.values().to_vec()
}

pub fn all_ids(chunks: &[ProcessedChunk]) -> Vec<i64> {
    chunks.iter().flat_map(|c| ids_of(&c.batch)).collect()
}

pub fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).expect("same schema")
}

/// Asserts two batches hold the same values column by column (schemas by name and type).
pub fn assert_same_values(a: &RecordBatch, b: &RecordBatch) {
    assert_eq!(a.num_rows(), b.num_rows(), "row counts differ");
    assert_eq!(a.num_columns(), b.num_columns(), "column counts differ");
    for i in 0..a.num_columns() {
        let (x, y) = (a.column(i), b.column(i));
        assert_eq!(x.data_type(), y.data_type(), "type of column {i}");
        assert_eq!(x.to_data(), y.to_data(), "values of column {i}");
    }
}

pub fn write_csv(path: &std::path::Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).expect("create csv");
    let mut w = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(file);
    for b in batches {
        w.write(b).expect("write csv");
    }
}

pub fn write_parquet(path: &std::path::Path, batches: &[RecordBatch], row_group_rows: usize) {
    let file = std::fs::File::create(path).expect("create parquet");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), Some(props))
        .expect("writer");
    for b in batches {
        w.write(b).expect("write");
    }
    w.close().expect("close");
}

pub fn write_ndjson(path: &std::path::Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).expect("create ndjson");
    let mut w = arrow::json::LineDelimitedWriter::new(file);
    for b in batches {
        w.write(b).expect("write json");
    }
    w.finish().expect("finish");
}

pub fn write_ipc_file(path: &std::path::Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).expect("create ipc");
    let mut w =
        arrow::ipc::writer::FileWriter::try_new(file, &batches[0].schema()).expect("writer");
    for b in batches {
        w.write(b).expect("write");
    }
    w.finish().expect("finish");
}

pub fn write_ipc_stream(path: &std::path::Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).expect("create ipc stream");
    let mut w =
        arrow::ipc::writer::StreamWriter::try_new(file, &batches[0].schema()).expect("writer");
    for b in batches {
        w.write(b).expect("write");
    }
    w.finish().expect("finish");
}

/// Reads every part file of an output folder, in manifest order.
pub fn read_parts(dir: &std::path::Path) -> Vec<RecordBatch> {
    let manifest = sluice::Manifest::read_from(dir).expect("manifest");
    let mut out = Vec::new();
    for part in &manifest.parts {
        let path = dir.join(&part.file);
        let file = std::fs::File::open(&path).expect("part exists");
        match manifest.format {
            sluice::OutputFormat::Parquet => {
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .expect("readable parquet")
                        .build()
                        .expect("reader");
                out.extend(reader.map(|b| b.expect("batch")));
            }
            sluice::OutputFormat::Ipc => {
                let reader =
                    arrow::ipc::reader::FileReader::try_new(file, None).expect("readable ipc");
                out.extend(reader.map(|b| b.expect("batch")));
            }
            sluice::OutputFormat::Csv => {
                let reader = arrow::csv::ReaderBuilder::new(out_schema())
                    .with_header(true)
                    .build(file)
                    .expect("csv reader");
                out.extend(reader.map(|b| b.expect("batch")));
            }
        }
    }
    out
}

pub fn out_schema() -> SchemaRef {
    transform(&batch(0, 1)).schema()
}
