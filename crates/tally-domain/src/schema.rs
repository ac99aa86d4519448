//! OpenAPI schemas of the domain's hand-serialized types (identifiers, money, roles), which
//! travel as plain strings or numbers and so cannot be derived from their Rust shape.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};

/// A string schema with a description and, optionally, a pattern and length bounds.
pub fn string(description: &str, pattern: Option<&str>, max_length: Option<usize>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .min_length(Some(1))
        .max_length(max_length)
        .into()
}

/// An RFC 3339 timestamp.
pub fn date_time(description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .description(Some(description))
        .into()
}

/// Implements `ToSchema` for a type from a function giving its schema.
#[macro_export]
macro_rules! schema_from {
    ($type:ty, $schema:expr) => {
        impl utoipa::PartialSchema for $type {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $schema
            }
        }
        impl utoipa::ToSchema for $type {}
    };
}
