//! The saga definitions and domain services of the reference checkout scenario.
pub mod domains;
