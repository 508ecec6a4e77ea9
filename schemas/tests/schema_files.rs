//! The checked-in JSON Schema files must match what the Rust types generate.
//! Run with `UPDATE_SCHEMAS=1` to rewrite them after changing a type.

use std::path::PathBuf;

#[test]
fn checked_in_schema_files_match_the_types() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut drifted = Vec::new();
    for (name, generated) in schemas::generated_schemas() {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != generated {
            drifted.push(name);
        }
    }
    assert!(
        drifted.is_empty(),
        "schema files out of date: {drifted:?}; run `UPDATE_SCHEMAS=1 cargo test -p schemas`"
    );
}

#[test]
fn every_schema_file_is_generated() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    let generated: Vec<_> = schemas::generated_schemas()
        .into_iter()
        .map(|(name, _)| name.to_string())
        .collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(generated.contains(&name), "stale schema file {name}");
    }
}
