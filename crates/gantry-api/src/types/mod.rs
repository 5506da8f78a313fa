//! The API's request and response bodies: the wire format, and nothing else. Engine records
//! stay the server's own; handlers convert them into these at the edge, the CLI's client reads
//! these, and `/api/openapi.json` carries their JSON Schemas (made from the same types, so the
//! document cannot drift from what is sent).

mod environments;
mod records;
mod runners;
mod runs;
mod why;

pub use environments::*;
pub use records::*;
pub use runners::*;
pub use runs::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
pub use why::*;

/// Every refusal: `{"error": {"code", "message"}}` with the HTTP status.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// `not_found`, `bad_request`, `conflict`, `unauthorized`, `forbidden`, `invalid`,
    /// `unavailable`, `internal`, `deploy_failed`, …
    pub code: String,
    /// What is wrong, in the user's terms.
    pub message: String,
}

/// A body's schema, as the route table names it: a `$ref` into the document's components.
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// The schema of `T`, for [`crate::routes::RouteInfo`]'s bodies.
pub fn schema<T: JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// A generator whose `$ref`s point into an OpenAPI 3.1 document's `components/schemas`.
pub fn generator() -> schemars::SchemaGenerator {
    schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator()
}
