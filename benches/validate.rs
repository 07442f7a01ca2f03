//! Validating the 512-node reference spec: parse + check + resolve.
//! Prints figures (median, min) and the ratio against a baseline measured in
//! the same run (parsing the same YAML into an untyped value), since the
//! machines are shared and noisy. `--quick` runs few iterations (CI).

use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iters = if quick { 5 } else { 50 };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let files = drover::spec::load_dir(&dir).expect("reference specs load");

    let mut check = Vec::new();
    let mut nodes = 0;
    for _ in 0..iters {
        let t = Instant::now();
        let fleet = drover::spec::validate::check(&files).expect("reference spec is valid");
        check.push(t.elapsed());
        nodes = fleet.nodes.len();
    }
    let mut baseline = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        for f in &files {
            let v: serde_json::Value = serde_saphyr::from_str(&f.text).expect("yaml");
            std::hint::black_box(v);
        }
        baseline.push(t.elapsed());
    }
    let (m, b) = (median(check.clone()), median(baseline));
    println!(
        "validate reference spec ({nodes} nodes, {} files): median {:.2} ms, min {:.2} ms (target < 50 ms); \
         untyped YAML parse baseline {:.2} ms; ratio {:.2}x",
        files.len(),
        m.as_secs_f64() * 1e3,
        check.iter().min().unwrap().as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        m.as_secs_f64() / b.as_secs_f64().max(1e-9)
    );
}
