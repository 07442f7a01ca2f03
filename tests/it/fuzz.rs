//! No input makes the spec parser panic or hang: arbitrary text, mutations of
//! the reference spec, and hostile YAML (alias bombs, deep nesting).
//! `PROPTEST_CASES` scales the number of cases (default 1000 per property).

use std::time::{Duration, Instant};

use drover::spec::{SourceFile, validate};
use proptest::prelude::*;

fn check(text: String) {
    let files = [SourceFile { path: "fuzz.yaml".into(), text }];
    let _ = validate::check(&files);
}

fn reference() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    drover::spec::load_dir(&dir).unwrap().into_iter().map(|f| f.text).collect()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Replace(usize, String),
    Insert(usize, String),
    FlipChar(usize, char),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let junk = prop_oneof![
        Just(":".to_string()),
        Just("- ".to_string()),
        Just("{".to_string()),
        Just("*alias".to_string()),
        Just("&anchor x".to_string()),
        Just("99999999999999999999".to_string()),
        Just("!!binary aGVsbG8=".to_string()),
        Just("  count: 4294967295".to_string()),
        Just("<<: *a".to_string()),
        ".{0,20}",
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), junk.clone()).prop_map(|(i, s)| Mutation::Replace(i, s)),
        (any::<usize>(), junk).prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| Mutation::FlipChar(i, c)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, muts: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for m in muts {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match m {
            Mutation::Delete(i) => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::Replace(i, s) => lines[i % n] = s.clone(),
            Mutation::Insert(i, s) => lines.insert(i % n, s.clone()),
            Mutation::FlipChar(i, c) => {
                let l = &mut lines[i % n];
                let chars: Vec<char> = l.chars().collect();
                if !chars.is_empty() {
                    let k = i % chars.len();
                    *l = chars[..k].iter().chain(std::iter::once(c)).chain(&chars[k + 1..]).collect();
                }
            }
            Mutation::Truncate(i) => lines.truncate(i % n),
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check(text);
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(String::from_utf8_lossy(&bytes).into_owned());
    }

    #[test]
    fn mutated_reference_specs_never_panic(file in 0usize..6, muts in proptest::collection::vec(mutation(), 1..6)) {
        let texts = reference();
        check(apply(&texts[file % texts.len()], &muts));
    }
}

#[test]
fn alias_bombs_and_deep_nesting_fail_fast() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    bomb.push_str("sites: *a11\n");
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let deep_map = (0..20_000).map(|i| format!("{}k:", " ".repeat(i % 200))).collect::<Vec<_>>().join("\n");
    for text in [bomb, deep, deep_map] {
        let t = Instant::now();
        let files = [SourceFile { path: "bomb.yaml".into(), text }];
        assert!(validate::check(&files).is_err());
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    }
}
