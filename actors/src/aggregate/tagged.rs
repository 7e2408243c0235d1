//! A stored event read as the tagged document `{"type": …, "payload": …}` its aggregate's enum
//! expects, from the envelope's parts, tag first, without building that document: no copy of
//! the payload, no map, and the enum decodes its content directly (with the content first it
//! would be buffered before the tag is known).

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::Value;

/// `{"type": event_type, "payload": payload}` as a deserializer, borrowing both.
pub(crate) struct Tagged<'a> {
    pub(crate) event_type: &'a str,
    pub(crate) payload: &'a Value,
}

impl<'de> de::Deserializer<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(Entries {
            tagged: self,
            next: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

/// The two entries, the tag first.
struct Entries<'a> {
    tagged: Tagged<'a>,
    next: u8,
}

impl<'de> MapAccess<'de> for Entries<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = match self.next {
            0 => "type",
            1 => "payload",
            _ => return Ok(None),
        };
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let entry = self.next;
        self.next += 1;
        match entry {
            0 => seed.deserialize(de::value::BorrowedStrDeserializer::new(
                self.tagged.event_type,
            )),
            _ => seed.deserialize(self.tagged.payload),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(2usize.saturating_sub(self.next as usize))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "type", content = "payload")]
    enum Event {
        Opened { owner: String },
        Deposited { amount: u64 },
        Closed,
    }

    fn decode(event_type: &str, payload: Value) -> Result<Event, serde_json::Error> {
        Event::deserialize(Tagged {
            event_type,
            payload: &payload,
        })
    }

    #[test]
    fn every_kind_of_variant_decodes_as_from_the_whole_document() {
        for (ty, payload) in [
            ("Opened", serde_json::json!({"owner": "a"})),
            ("Deposited", serde_json::json!({"amount": 5})),
            ("Closed", Value::Null),
        ] {
            let whole: Event =
                serde_json::from_value(serde_json::json!({"type": ty, "payload": payload.clone()}))
                    .unwrap();
            assert_eq!(decode(ty, payload).unwrap(), whole);
        }
    }

    #[test]
    fn an_unknown_type_or_a_wrong_payload_is_an_error_naming_it() {
        let e = decode("Renamed", serde_json::json!({})).unwrap_err();
        assert!(e.to_string().contains("Renamed"), "{e}");
        let e = decode("Deposited", serde_json::json!({"amount": "five"})).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        let e = decode("Deposited", serde_json::json!({})).unwrap_err();
        assert!(e.to_string().contains("amount"), "{e}");
    }
}
