//! The committed JSON Schema is the one the types generate.

use crate::{root, sluice};

#[test]
fn committed_schema_matches_sluice_schema() {
    let out = sluice(&["schema"]);
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(root().join("schemas/pipeline.schema.json")).unwrap();
    assert!(
        generated == committed,
        "schemas/pipeline.schema.json is stale: run `cargo run -- schema > schemas/pipeline.schema.json`"
    );
}

#[test]
fn schema_validates_examples_as_json() {
    let schema: serde_json::Value = serde_json::from_slice(&sluice(&["schema"]).stdout).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for file in crate::spec_files(&root().join("pipelines")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let syntax = sluice::spec::loader::Syntax::from_path(&file).unwrap();
        let value = sluice::spec::loader::load(&text, syntax).value.unwrap();
        let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
}
