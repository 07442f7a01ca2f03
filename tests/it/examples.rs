//! Every annotated example in examples/ is a valid spec.

#[test]
fn every_example_validates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        if !e.path().is_dir() {
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
