//! JSON redaction: parse, apply field rules by key, run the free-text rules over every
//! remaining string (and every long integer, which may be a card or account number
//! written as a number), and print compactly. The output is always valid JSON.

use serde_json::Value;

use crate::{Action, REDACTED, rules::Rules, rules::mask_last4, text};

pub(crate) fn redact(rules: &Rules, body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => {
            walk(rules, &mut value);
            value.to_string()
        }
        Err(_) => text::redact(&String::from_utf8_lossy(body)).into_owned(),
    }
}

fn walk(rules: &Rules, value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match rules.field(key) {
                    Some(action) => apply(rules, action, value),
                    None => walk(rules, value),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| walk(rules, item)),
        Value::String(s) => {
            if let std::borrow::Cow::Owned(redacted) = text::redact(s) {
                *s = redacted;
            }
        }
        Value::Number(n) => {
            // A card number written as a number. Other long integers are left alone
            // outside keyed fields: they are mostly timestamps and amounts in minor units.
            if let Some(masked) = n.as_u64().and_then(text::mask_card_number) {
                *value = Value::String(masked);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

fn apply(rules: &Rules, action: Action, value: &mut Value) {
    let scalar = match value {
        Value::String(s) => Some(std::mem::take(s)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        // An absent value hides nothing.
        Value::Null => return,
        Value::Object(_) | Value::Array(_) => None,
    };
    *value = Value::String(match (action, scalar) {
        (Action::MaskLast4, Some(s)) => mask_last4(&s),
        (Action::Hash, Some(s)) => rules.pseudonym(&s),
        (Action::Hash, None) => rules.pseudonym(&value.to_string()),
        (Action::Drop | Action::MaskLast4, _) => REDACTED.to_owned(),
    });
}
