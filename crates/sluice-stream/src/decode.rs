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
    to_object_with_extras(m).map(|(object, _)| object)
}

/// The object and the extra fields (Redis entry fields, NATS headers) it was given that
/// its payload did not have.
fn to_object_with_extras(m: &Message) -> Result<(Map<String, Value>, Vec<usize>), String> {
    if let Some(literal) = oversized_integer(&m.data) {
        // The JSON parser would make it a float and lose digits.
        return Err(format!(
            "the integer {literal} is too large to be held exactly"
        ));
    }
    let Strict(value) = serde_json::from_slice(&m.data).map_err(|e| match e.classify() {
        // Ours (a key twice): the text is JSON, the reason says what is wrong with it.
        serde_json::error::Category::Data => e.to_string(),
        _ => format!("not JSON: {e}"),
    })?;
    let Value::Object(mut object) = value else {
        return Err("not a JSON object".into());
    };
    let mut added = Vec::new();
    for (i, (k, v)) in m.extra.iter().enumerate() {
        match object.get(k) {
            None => {
                object.insert(k.clone(), Value::String(v.clone()));
                added.push(i);
            }
            Some(Value::String(same)) if same == v => {}
            Some(_) => {
                return Err(format!(
                    "field {k:?} is both in the payload and a field or header of the message, \
                     with other values"
                ))
            }
        }
    }
    Ok((object, added))
}

/// The message's JSON text with the extra fields `added` appended: what the columns are
/// decoded from. The payload's own text, not values parsed from it, so numbers are parsed
/// once, by the Arrow reader, to the nearest value (serde_json's default float parsing
/// may be one unit in the last place off).
fn row_text(m: &Message, added: &[usize]) -> Vec<u8> {
    if added.is_empty() {
        return m.data.clone();
    }
    let text = m.data.trim_ascii_end();
    // A JSON object's text ends with its closing brace (checked by the parse before).
    let body = &text[..text.len().saturating_sub(1)];
    let empty = body.trim_ascii_end().ends_with(b"{");
    let mut out = Vec::with_capacity(m.data.len() + 32 * added.len());
    out.extend_from_slice(body);
    for (n, &i) in added.iter().enumerate() {
        let (k, v) = &m.extra[i];
        if n > 0 || !empty {
            out.push(b',');
        }
        out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(Value::String(v.clone()).to_string().as_bytes());
    }
    out.push(b'}');
    out
}

/// A JSON value read like serde_json's own, except that an object holding a key twice is
/// an error (serde_json keeps the last value and drops the others without a word).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("the number {v} is not finite")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            values.push(v);
        }
        Ok(Value::Array(values))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "field {key:?} is in the object twice"
                )));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
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

    fn decode_texts(&self, texts: &[Vec<u8>]) -> Result<RecordBatch, String> {
        let mut decoder = self.decoder(texts.len())?;
        for text in texts {
            let mut rest: &[u8] = text;
            while !rest.is_empty() {
                let read = decoder.decode(rest).map_err(|e| e.to_string())?;
                if read == 0 {
                    return Err("the JSON reader took nothing of a message".into());
                }
                rest = &rest[read..];
            }
            // Ends the value, so the next message's text starts a new one.
            decoder.decode(b"\n").map_err(|e| e.to_string())?;
        }
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
            let (object, added) = match to_object_with_extras(&m) {
                Ok(parsed) => parsed,
                Err(reason) => {
                    bad.push(Malformed { message: m, reason });
                    continue;
                }
            };
            match self.typing.fit(&object) {
                Fit::Exact => {
                    objects.push(row_text(&m, &added));
                    good.push(m);
                }
                Fit::Refused(reason) => bad.push(Malformed { message: m, reason }),
                Fit::Grow
                    if self
                        .typing
                        .grown(&object)
                        .is_none_or(|g| g.schema == self.schema) =>
                {
                    // Cannot happen while `fit` and `grown` agree; refusing keeps a run from
                    // handing the same message to the next run forever.
                    bad.push(Malformed {
                        message: m,
                        reason: "its values cannot be given columns".into(),
                    });
                }
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
        objects: Vec<Vec<u8>>,
        mut bad: Vec<Malformed>,
    ) -> (RecordBatch, Vec<Message>, Vec<Malformed>) {
        if let Ok(batch) = self.decode_texts(&objects) {
            return (batch, good, bad);
        }
        // Some value does not fit the schema: find which, one at a time.
        let (mut fit, mut fit_objects) = (Vec::new(), Vec::new());
        for (m, o) in good.into_iter().zip(objects) {
            match self.decode_texts(std::slice::from_ref(&o)) {
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
        match self.decode_texts(&fit_objects) {
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
    fn numbers_are_stored_as_their_text_says_and_extra_fields_added() {
        let texts = [
            "0.9999999999999999",
            "117.63331139400017",
            "0.9215686321258545",
            "1e-300",
        ];
        let messages: Vec<Message> = texts
            .iter()
            .enumerate()
            .map(|(i, x)| msg(&i.to_string(), &format!(r#"{{"x": {x}}}"#)))
            .chain([msg("e", "{ }")])
            .collect();
        let typing = StreamSchema::infer(objects(&messages).iter()).expect("schema");
        let decoded = JsonDecoder::new(typing).decode(messages);
        assert!(decoded.bad.is_empty() && decoded.rest.is_none());
        let batch = decoded.batch;
        let x = batch
            .column_by_name("x")
            .expect("x")
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .expect("f64");
        for (i, text) in texts.iter().enumerate() {
            let nearest: f64 = text.parse().expect("a float");
            assert_eq!(x.value(i).to_bits(), nearest.to_bits(), "{text}");
        }
        assert!(arrow::array::Array::is_null(x, 4), "the empty object's x");
        let source = batch
            .column_by_name("source")
            .expect("the extra field")
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .expect("text");
        assert!((0..5).all(|i| source.value(i) == "s1"));
    }

    #[test]
    fn a_key_twice_or_a_header_that_disagrees_is_refused_not_dropped() {
        for (data, says) in [
            (r#"{"a": 1, "a": 2}"#, "field \"a\" is in the object twice"),
            (
                r#"{"o": {"k": "x", "k": null}}"#,
                "field \"k\" is in the object twice",
            ),
            (
                r#"{"source": "payload"}"#,
                "both in the payload and a field or header",
            ),
        ] {
            let e = to_object(&msg("1", data)).expect_err(data);
            assert!(e.contains(says), "{data}: {e}");
        }
        let same =
            to_object(&msg("2", r#"{"source": "s1", "a": [1, {"b": null}]}"#)).expect("fine");
        assert_eq!(same["source"], "s1");
        assert!(to_object(&msg("3", "{\"a\": 1"))
            .expect_err("cut")
            .starts_with("not JSON"));
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
