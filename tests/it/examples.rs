//! Every annotated example in examples/ is a valid spec (but `examples/ci/`,
//! CI jobs for a spec repository, checked by `dist.rs`).

#[test]
fn every_example_validates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        if !e.path().is_dir() || e.file_name() == "ci" {
            continue;
        }
        let files = drover::spec::load_dir(&e.path()).unwrap();
        if let Err(d) = drover::spec::validate::check(&files) {
            panic!("{}:\n{}", e.path().display(), drover::spec::diag::render(&d, &files));
        }
        n += 1;
    }
    assert!(n >= 7, "only {n} examples");
}
