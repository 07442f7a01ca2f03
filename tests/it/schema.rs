//! The committed schema must be what `drover schema` prints today.

#[test]
fn committed_schema_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/drover-spec.schema.json");
    let committed = std::fs::read_to_string(path).expect("schemas/drover-spec.schema.json exists");
    let current = serde_json::to_string_pretty(&drover::spec::json_schema()).unwrap() + "\n";
    assert!(
        committed == current,
        "schemas/drover-spec.schema.json is stale: run `cargo run -- schema > schemas/drover-spec.schema.json`"
    );
}

#[test]
fn schema_is_draft07_and_describes_every_section() {
    let s = drover::spec::json_schema();
    assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
    for section in ["fleet", "profiles", "package_sets", "sites", "farms", "simulation"] {
        assert!(s["properties"].get(section).is_some(), "schema lacks `{section}`");
    }
}

#[test]
fn reference_and_example_specs_carry_the_schema_line() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut checked = 0;
    let mut dirs: Vec<String> = vec!["specs".into(), "specs/sites".into()];
    for e in std::fs::read_dir(format!("{root}/examples")).unwrap().flatten() {
        dirs.push(format!("examples/{}", e.file_name().to_string_lossy()));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(format!("{root}/{dir}")) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&p).unwrap();
                assert!(
                    text.starts_with("# yaml-language-server: $schema="),
                    "{} lacks the yaml-language-server schema line",
                    p.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 13, "only {checked} spec files found");
}
