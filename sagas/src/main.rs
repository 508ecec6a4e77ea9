//! The `sagas` binary.
fn main() {}
