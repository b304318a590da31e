//! Messages to Arrow rows: each message is a JSON object (its fields are the columns; a
//! Redis entry's other fields become string columns). The schema is inferred from the
//! first messages; a message that is not a JSON object or does not fit the schema is
//! malformed and is set aside with the reason, never stopping the stream.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::json::reader::{infer_json_schema_from_iterator, Decoder, ReaderBuilder};
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};

use crate::broker::Message;

/// A message that could not become a row, and why.
pub struct Malformed {
    pub message: Message,
    pub reason: String,
}

/// The fields of one message as a JSON object, or why not.
fn to_object(m: &Message) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_slice(&m.data).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err("not a JSON object".into());
    };
    for (k, v) in &m.extra {
        object
            .entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    Ok(object)
}

/// Infers the schema from the well-formed messages among `messages`; `None` if none is.
/// A field's type is the one it has in the first message where it is not null, so a few
/// malformed values among the first messages do not turn a column into strings.
pub fn infer_schema(messages: &[Message]) -> Option<SchemaRef> {
    let mut fields: Vec<Field> = Vec::new();
    let mut any = false;
    for m in messages {
        let Ok(object) = to_object(m) else { continue };
        any = true;
        let one = Value::Object(object);
        let Ok(schema) = infer_json_schema_from_iterator(std::iter::once(Ok(one))) else {
            continue;
        };
        for f in schema.fields() {
            match fields.iter_mut().find(|known| known.name() == f.name()) {
                Some(known) if known.data_type() == &DataType::Null => *known = f.as_ref().clone(),
                Some(_) => {}
                None => fields.push(f.as_ref().clone()),
            }
        }
    }
    any.then(|| {
        // A column never seen with a value is kept as text.
        let fields: Vec<Field> = fields
            .into_iter()
            .map(|f| match f.data_type() {
                DataType::Null => Field::new(f.name(), DataType::Utf8, true),
                _ => f.with_nullable(true),
            })
            .collect();
        Arc::new(Schema::new(fields))
    })
}

pub struct JsonDecoder {
    schema: SchemaRef,
}

impl JsonDecoder {
    pub fn new(schema: SchemaRef) -> Self {
        JsonDecoder { schema }
    }

    fn decoder(&self, rows: usize) -> Result<Decoder, String> {
        ReaderBuilder::new(self.schema.clone())
            .with_batch_size(rows.max(1))
            .build_decoder()
            .map_err(|e| e.to_string())
    }

    fn decode_objects(&self, objects: &[Value]) -> Result<RecordBatch, String> {
        let mut decoder = self.decoder(objects.len())?;
        decoder.serialize(objects).map_err(|e| e.to_string())?;
        match decoder.flush().map_err(|e| e.to_string())? {
            Some(batch) => Ok(batch),
            None => Ok(RecordBatch::new_empty(self.schema.clone())),
        }
    }

    /// Rows of the well-formed messages (in order) and the malformed ones.
    pub fn decode(&self, messages: Vec<Message>) -> (RecordBatch, Vec<Message>, Vec<Malformed>) {
        let mut good = Vec::with_capacity(messages.len());
        let mut objects = Vec::with_capacity(messages.len());
        let mut bad = Vec::new();
        for m in messages {
            match to_object(&m) {
                Ok(o) => {
                    objects.push(Value::Object(o));
                    good.push(m);
                }
                Err(reason) => bad.push(Malformed { message: m, reason }),
            }
        }
        if let Ok(batch) = self.decode_objects(&objects) {
            return (batch, good, bad);
        }
        // Some value does not fit the schema: find which, one at a time.
        let (mut fit, mut fit_objects) = (Vec::new(), Vec::new());
        for (m, o) in good.into_iter().zip(objects) {
            match self.decode_objects(std::slice::from_ref(&o)) {
                Ok(_) => {
                    fit.push(m);
                    fit_objects.push(o);
                }
                Err(reason) => bad.push(Malformed {
                    message: m,
                    reason: format!("does not fit the stream's columns: {reason}"),
                }),
            }
        }
        match self.decode_objects(&fit_objects) {
            Ok(batch) => (batch, fit, bad),
            Err(reason) => {
                // Each fits alone but not together: cannot happen with one schema; keep
                // nothing rather than lose track of what was delivered.
                for m in fit {
                    bad.push(Malformed {
                        message: m,
                        reason: reason.clone(),
                    });
                }
                (RecordBatch::new_empty(self.schema.clone()), Vec::new(), bad)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, data: &str) -> Message {
        Message {
            id: id.into(),
            ack: None,
            data: data.as_bytes().to_vec(),
            extra: vec![("source".into(), "s1".into())],
        }
    }

    #[test]
    fn malformed_messages_are_set_aside_with_their_ids() {
        let first = vec![
            msg("1", r#"{"a": 1, "b": "x"}"#),
            msg("1b", r#"{"a": "oops", "b": "x"}"#),
        ];
        let schema = infer_schema(&first).expect("schema");
        assert_eq!(schema.fields().len(), 3);
        assert_eq!(
            schema.field_with_name("a").expect("a").data_type(),
            &DataType::Int64
        );
        let d = JsonDecoder::new(schema);
        let (batch, good, bad) = d.decode(vec![
            msg("2", r#"{"a": 2, "b": "y"}"#),
            msg("3", "not json"),
            msg("4", r#"[1, 2]"#),
            msg("5", r#"{"a": "text", "b": "z"}"#),
            msg("6", r#"{"a": 6}"#),
        ]);
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(
            good.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["2", "6"]
        );
        let mut bad_ids: Vec<&str> = bad.iter().map(|m| m.message.id.as_str()).collect();
        bad_ids.sort();
        assert_eq!(bad_ids, ["3", "4", "5"]);
    }
}
