//! `Sp<T>`: a value with the place in a spec file it came from.
//!
//! Every value a semantic check may complain about is kept as `Sp<T>`, so the
//! error can name file, line and column long after parsing. The JSON Schema of
//! `Sp<T>` is that of `T`: the location is invisible to the spec's author.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};

/// A position in a spec file: 1-based line and column plus the byte span,
/// when the parser knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
    /// Byte offset and length of the value in its file (0, 0 when unknown).
    pub offset: u32,
    pub len: u32,
}

impl Pos {
    pub fn from_saphyr(loc: serde_saphyr::Location) -> Pos {
        let span = loc.span();
        Pos {
            line: loc.line() as u32,
            col: loc.column() as u32,
            offset: span.byte_offset().unwrap_or(0) as u32,
            len: span.byte_len().unwrap_or(0) as u32,
        }
    }
}

/// A deserialized value and where it was written.
#[derive(Clone, Debug)]
pub struct Sp<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Sp<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Sp { value, pos }
    }
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de> + 'static> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        // Every string of a spec is an `Sp<String>`: its length is bounded here, once for all fields.
        if let Some(text) = (&s.value as &dyn std::any::Any).downcast_ref::<String>() {
            super::limits::string_value(text).map_err(serde::de::Error::custom)?;
        }
        Ok(Sp { value: s.value, pos: Pos::from_saphyr(s.referenced) })
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}
