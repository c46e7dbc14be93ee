//! A serde `Deserializer` over a `toml::Value` whose errors say *where* (the path of the
//! value) and *what* (a structured kind), so the loader can turn each into a [`Problem`]
//! with the key, the source and the fix.
//!
//! toml's own deserializer reports a message string and stops; the loader needs to know
//! which key failed, whether it was unknown, missing or refused, and to go on. The schema
//! itself is plain `#[derive(Deserialize)]`: this module is the only place that knows how
//! a TOML value is walked.
//!
//! [`Problem`]: crate::Problem

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    Unexpected, Visitor,
};
use toml::Value;

use crate::types::{Refusal, a};

/// One step into a TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A table key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Why a value could not be read, without where (that is [`FieldError::path`]).
#[derive(Debug)]
pub(crate) enum Kind {
    /// A newtype refused the value (its `Deserialize` said what and how to fix it).
    Refused(Refusal),
    /// The value has the wrong TOML type for a plain field.
    WrongType {
        /// "a string", "an integer"...
        found: &'static str,
        /// What the field wanted.
        expected: Expect,
    },
    /// An integer out of the field's range (negative, or above its maximum).
    OutOfRange {
        /// The value.
        n: i64,
        /// The field type's name as serde says it ("u32", "usize"...).
        expected: String,
    },
    /// A string that is none of an enum's spellings (or not a string at all).
    Choice {
        found: &'static str,
        variants: &'static [&'static str],
    },
    /// A key the table's struct does not have.
    UnknownField {
        field: String,
        expected: &'static [&'static str],
    },
    /// A key the table's struct needs.
    MissingField(&'static str),
}

/// What a plain (non-newtype) field expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    Bool,
    Str,
    Integer,
    Float,
    Table,
    List,
    Other,
}

/// A value that could not be read: where it is and why.
#[derive(Debug)]
pub(crate) struct FieldError {
    /// The path of the value (for [`Kind::UnknownField`] and [`Kind::MissingField`], of the
    /// table holding the key). `None` until the access that handed out the value sets it.
    pub(crate) path: Option<Vec<Seg>>,
    pub(crate) kind: Kind,
}

// === impl FieldError ===

impl FieldError {
    fn new(kind: Kind) -> Self {
        Self { path: None, kind }
    }

    /// Places the error at `path` unless a deeper value already claimed it.
    fn at(mut self, path: &[Seg]) -> Self {
        self.path.get_or_insert_with(|| path.to_vec());
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only for serde's `Error` bound; the loader reads the fields, never this text.
        write!(f, "{:?}", self.kind)
    }
}

impl std::error::Error for FieldError {}

impl de::Error for FieldError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(Kind::Refused(Refusal::decode(&msg.to_string())))
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::new(Kind::WrongType {
            found: describe(&unexp),
            expected: Expect::from_serde(&exp.to_string()),
        })
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        match unexp {
            Unexpected::Signed(n) => Self::new(Kind::OutOfRange {
                n,
                expected: exp.to_string(),
            }),
            other => Self::invalid_type(other, exp),
        }
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Self::new(Kind::Choice {
            found: "a string",
            variants: expected,
        })
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::new(Kind::UnknownField {
            field: field.to_owned(),
            expected,
        })
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(Kind::MissingField(field))
    }
}

impl Expect {
    /// Reads serde's `Expected` text for the primitive types the schema uses.
    fn from_serde(text: &str) -> Self {
        match text {
            "a boolean" => Self::Bool,
            "a string" | "a borrowed string" | "a character" => Self::Str,
            "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" => {
                Self::Integer
            }
            "f32" | "f64" => Self::Float,
            "a map" => Self::Table,
            "a sequence" => Self::List,
            _ if text.starts_with("struct ") => Self::Table,
            _ => Self::Other,
        }
    }
}

/// "a string", "an integer"... for serde's description of a value.
fn describe(unexp: &Unexpected<'_>) -> &'static str {
    match unexp {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Signed(n) if *n < 0 => "a negative integer",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer",
        Unexpected::Float(_) => "a float",
        Unexpected::Str(_) | Unexpected::Char(_) => "a string",
        Unexpected::Seq => "an array",
        Unexpected::Map => "a table",
        _ => "a value",
    }
}

/// Renders a path as a dotted key: `webhooks.allow_ips[2]`,
/// `rate_limit.routes."/sandbox/ping".burst`. Keys that are not bare TOML keys are quoted.
pub(crate) fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    out.push_str(key);
                } else {
                    out.push_str(&Value::String(key.clone()).to_string());
                }
            }
            Seg::Index(index) => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Deserializes one TOML value at `path`.
pub(crate) struct ValueDe {
    value: Value,
    path: Vec<Seg>,
}

impl ValueDe {
    /// The document root.
    pub(crate) fn root(value: Value) -> Self {
        Self {
            value,
            path: Vec::new(),
        }
    }

    fn found(&self) -> &'static str {
        a(&self.value)
    }

    fn wrong(self, expected: Expect) -> FieldError {
        FieldError::new(Kind::WrongType {
            found: self.found(),
            expected,
        })
        .at(&self.path)
    }
}

impl<'de> Deserializer<'de> for ValueDe {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        let path = self.path;
        let visited = match self.value {
            Value::String(s) => visitor.visit_string(s),
            Value::Integer(n) => visitor.visit_i64(n),
            Value::Float(x) => visitor.visit_f64(x),
            Value::Boolean(b) => visitor.visit_bool(b),
            Value::Datetime(d) => visitor.visit_string(d.to_string()),
            Value::Array(items) => visitor.visit_seq(Items {
                items: items.into_iter().enumerate(),
                path: &path,
            }),
            Value::Table(table) => visitor.visit_map(Entries {
                rest: table.into_iter(),
                pending: None,
                path: &path,
            }),
        };
        visited.map_err(|err| err.at(&path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        // A key that is present is `Some`; absence is the struct's default.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        if self.value.is_table() {
            self.deserialize_any(visitor)
        } else {
            Err(self.wrong(Expect::Table))
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        if self.value.is_array() {
            self.deserialize_any(visitor)
        } else {
            Err(self.wrong(Expect::List))
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        let found = self.found();
        let Value::String(text) = self.value else {
            return Err(FieldError::new(Kind::Choice { found, variants }).at(&self.path));
        };
        let access: de::value::StringDeserializer<FieldError> = text.into_deserializer();
        visitor
            .visit_enum(Unit(access))
            .map_err(|err| err.at(&self.path))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct tuple tuple_struct identifier ignored_any
    }
}

impl IntoDeserializer<'_, FieldError> for ValueDe {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// A string enum's variant, with the string's own errors.
struct Unit(de::value::StringDeserializer<FieldError>);

impl<'de> EnumAccess<'de> for Unit {
    type Error = FieldError;
    type Variant = <de::value::StringDeserializer<FieldError> as EnumAccess<'de>>::Variant;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), FieldError> {
        self.0.variant_seed(seed)
    }
}

/// A list's items, each deserialized at its own index so its errors say which.
struct Items<'p> {
    items: std::iter::Enumerate<std::vec::IntoIter<Value>>,
    path: &'p [Seg],
}

impl<'de> SeqAccess<'de> for Items<'_> {
    type Error = FieldError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, FieldError> {
        let Some((index, value)) = self.items.next() else {
            return Ok(None);
        };
        let path = child(self.path, Seg::Index(index));
        seed.deserialize(ValueDe {
            value,
            path: path.clone(),
        })
        .map(Some)
        .map_err(|err| err.at(&path))
    }
}

/// A table's entries, each value deserialized at its own key.
struct Entries<'p> {
    rest: toml::map::IntoIter<String, Value>,
    pending: Option<(String, Value)>,
    path: &'p [Seg],
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = FieldError;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, FieldError> {
        let Some((key, value)) = self.rest.next() else {
            return Ok(None);
        };
        let read = seed.deserialize(key.clone().into_deserializer());
        self.pending = Some((key, value));
        read.map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, FieldError> {
        let Some((key, value)) = self.pending.take() else {
            return Err(de::Error::custom("a value was asked for before its key"));
        };
        let path = child(self.path, Seg::Key(key));
        seed.deserialize(ValueDe {
            value,
            path: path.clone(),
        })
        .map_err(|err| err.at(&path))
    }
}

fn child(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut path = path.to_vec();
    path.push(seg);
    path
}

/// Reads a field through the newtype `N` that validates it, into the schema's plain type
/// `T` (`#[serde(deserialize_with = "via::<PositiveU32, _, _>")]`), so the public field
/// types stay plain data.
pub(crate) fn via<'de, N, T, D>(d: D) -> Result<T, D::Error>
where
    N: serde::Deserialize<'de> + Into<T>,
    D: Deserializer<'de>,
{
    N::deserialize(d).map(Into::into)
}

/// [`via`] for an optional field: present means `Some`.
pub(crate) fn via_some<'de, N, T, D>(d: D) -> Result<Option<T>, D::Error>
where
    N: serde::Deserialize<'de> + Into<T>,
    D: Deserializer<'de>,
{
    N::deserialize(d).map(|n| Some(n.into()))
}

/// [`via`] for a list, item by item (so a bad item is reported at its own index).
pub(crate) fn via_each<'de, N, T, D>(d: D) -> Result<Vec<T>, D::Error>
where
    N: serde::Deserialize<'de> + Into<T>,
    D: Deserializer<'de>,
{
    <Vec<N> as serde::Deserialize>::deserialize(d)
        .map(|items| items.into_iter().map(Into::into).collect())
}
