//! Messages to Arrow rows: each message is a JSON object (its fields are the columns; a
//! Redis entry's other fields become string columns). A message that is not a JSON
//! object or cannot be carried exactly by the stream's columns (see [`crate::schema`]) is
//! malformed and is set aside with the reason, never stopping the stream; one that needs
//! the inferred columns to grow ends the batch, to start the next part with them.

use arrow::datatypes::SchemaRef;
use arrow::json::reader::{Decoder, ReaderBuilder};
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value};

use crate::broker::Message;
use crate::schema::{Fit, StreamSchema};

/// A message that could not become a row, and why.
pub struct Malformed {
    pub message: Message,
    pub reason: String,
}

/// The fields of one message as a JSON object, or why not.
pub(crate) fn to_object(m: &Message) -> Result<Map<String, Value>, String> {
    if let Some(literal) = oversized_integer(&m.data) {
        // The JSON parser would make it a float and lose digits.
        return Err(format!(
            "the integer {literal} is too large to be held exactly"
        ));
    }
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

/// An integer literal (outside strings) beyond both i64 and u64, if `json` has one.
fn oversized_integer(json: &[u8]) -> Option<String> {
    let (mut i, mut in_string) = (0, false);
    while i < json.len() {
        let b = json[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < json.len()
                && matches!(json[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            let token = &json[start..i];
            let digits = token.strip_prefix(b"-").unwrap_or(token);
            if digits.len() >= 19 && digits.iter().all(u8::is_ascii_digit) {
                let text = String::from_utf8_lossy(token).into_owned();
                if text.parse::<i64>().is_err() && text.parse::<u64>().is_err() {
                    return Some(text);
                }
            }
            continue;
        }
        i += 1;
    }
    None
}

/// What one batch of messages became.
pub struct Decoded {
    /// The rows of `good`, in order.
    pub batch: RecordBatch,
    pub good: Vec<Message>,
    pub bad: Vec<Malformed>,
    /// From the first message that needs the columns to grow on: those messages and the
    /// grown schema, for the next part.
    pub rest: Option<(Vec<Message>, StreamSchema)>,
}

pub struct JsonDecoder {
    typing: StreamSchema,
    schema: SchemaRef,
}

impl JsonDecoder {
    pub fn new(typing: StreamSchema) -> Self {
        JsonDecoder {
            schema: typing.schema.clone(),
            typing,
        }
    }

    pub fn typing(&self) -> &StreamSchema {
        &self.typing
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

    /// Rows of the messages that fit (in order), the malformed ones, and the rest of the
    /// batch from the first message that needs the columns to grow.
    pub fn decode(&self, messages: Vec<Message>) -> Decoded {
        let mut good = Vec::with_capacity(messages.len());
        let mut objects = Vec::with_capacity(messages.len());
        let mut bad = Vec::new();
        let mut rest = None;
        let mut messages = messages.into_iter();
        while let Some(m) = messages.next() {
            let object = match to_object(&m) {
                Ok(o) => o,
                Err(reason) => {
                    bad.push(Malformed { message: m, reason });
                    continue;
                }
            };
            match self.typing.fit(&object) {
                Fit::Exact => {
                    objects.push(Value::Object(object));
                    good.push(m);
                }
                Fit::Refused(reason) => bad.push(Malformed { message: m, reason }),
                Fit::Grow => {
                    let later: Vec<Message> = std::iter::once(m).chain(messages).collect();
                    let mut grown = self.typing.clone();
                    for o in later.iter().filter_map(|m| to_object(m).ok()) {
                        if let Some(g) = grown.grown(&o) {
                            grown = g;
                        }
                    }
                    rest = Some((later, grown));
                    break;
                }
            }
        }
        let (batch, good, bad) = self.rows_of(good, objects, bad);
        Decoded {
            batch,
            good,
            bad,
            rest,
        }
    }

    fn rows_of(
        &self,
        good: Vec<Message>,
        objects: Vec<Value>,
        mut bad: Vec<Malformed>,
    ) -> (RecordBatch, Vec<Message>, Vec<Malformed>) {
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

    fn objects(messages: &[Message]) -> Vec<Map<String, Value>> {
        messages.iter().filter_map(|m| to_object(m).ok()).collect()
    }

    #[test]
    fn malformed_messages_are_set_aside_with_their_ids_and_reasons() {
        let first = vec![msg("1", r#"{"a": 1, "b": "x"}"#)];
        let typing = StreamSchema::infer(objects(&first).iter()).expect("schema");
        assert_eq!(typing.schema.fields().len(), 3, "a, b and the extra field");
        let d = JsonDecoder::new(typing);
        let decoded = d.decode(vec![
            msg("2", r#"{"a": 2, "b": "y"}"#),
            msg("3", "not json"),
            msg("4", r#"[1, 2]"#),
            msg("5", r#"{"a": "7", "b": "z"}"#),
            msg("6", r#"{"a": 6}"#),
            msg("7", r#"{"a": 123456789012345678901234, "b": "big"}"#),
        ]);
        assert_eq!(decoded.batch.num_rows(), 2);
        assert!(decoded.rest.is_none());
        let ids: Vec<&str> = decoded.good.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["2", "6"]);
        let bad: Vec<(&str, &str)> = decoded
            .bad
            .iter()
            .map(|m| (m.message.id.as_str(), m.reason.as_str()))
            .collect();
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert!(bad[0].1.starts_with("not JSON"), "{bad:?}");
        assert_eq!(bad[1].1, "not a JSON object");
        assert!(
            bad[2].1.contains("text \"7\" where a number was"),
            "{bad:?}"
        );
        assert!(bad[3].1.contains("too large to be held exactly"), "{bad:?}");
    }

    #[test]
    fn a_message_that_needs_more_columns_ends_the_batch_with_the_grown_schema() {
        let first = vec![msg("1", r#"{"n": 1}"#)];
        let d = JsonDecoder::new(StreamSchema::infer(objects(&first).iter()).expect("schema"));
        let decoded = d.decode(vec![
            msg("2", r#"{"n": 2}"#),
            msg("3", r#"{"n": 2000.5}"#),
            msg("4", r#"{"n": 4, "late": "x"}"#),
            msg("5", r#"{"n": true}"#),
        ]);
        assert_eq!(decoded.batch.num_rows(), 1);
        let (rest, grown) = decoded.rest.expect("the rest");
        let ids: Vec<&str> = rest.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["3", "4", "5"]);
        let types: Vec<String> = grown
            .schema
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        assert_eq!(types, ["n:Float64", "source:Utf8", "late:Utf8"]);
        let next = JsonDecoder::new(grown).decode(rest);
        assert!(next.rest.is_none());
        assert_eq!(next.batch.num_rows(), 2);
        let n = next
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .expect("f64");
        assert_eq!(n.values(), &[2000.5, 4.0]);
        assert_eq!(next.bad.len(), 1, "true where a number was");
    }
}
