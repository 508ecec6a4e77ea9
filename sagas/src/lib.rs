//! The saga definitions and domain services of the reference checkout scenario.
