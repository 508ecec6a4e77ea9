//! The routes, one module per resource.

pub mod actions;
pub mod dead_letters;
pub mod definitions;
pub mod health;
pub mod sagas;
pub mod stats;
pub mod triggers;

use uuid::Uuid;

use crate::problem::ApiError;

/// A saga id from a path segment.
fn saga_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::bad_field("id", format!("`{text}` is not a UUID")))
}
