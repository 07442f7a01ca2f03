//! `drover render haproxy`: the command's contract (the configuration itself
//! is snapshot-tested in `src/render/haproxy.rs`, and run by a real HAProxy
//! in `fleet::haproxy_semantics`).

use std::path::PathBuf;
use std::process::Command;

const SPEC: &str = r#"
fleet:
  defaults: { packages: [base], php: "8.3.14", release: "2026.11.2" }
  policy: { preproduction: { waive_gate: true } }
profiles:
  - { name: p, binhost: "https://binhost.example.net/p", init: openrc }
package_sets:
  - { name: base, atoms: [app-arch/tar-1.35] }
sites:
  - name: par1
    environment: production
    lb: { admin_tcp: "127.0.0.1:9999", bind: "127.0.0.1:8080" }
farms:
  - name: par1-f01
    site: par1
    lb: { listen: "127.0.0.1:8101" }
    nodes:
      - { name: n1, address: 10.1.1.11, member: 1, profile: p }
      - { name: n2, address: 10.1.1.12, member: 2, profile: p }
"#;

fn spec_dir(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("render-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fleet.yaml"), text).unwrap();
    dir
}

fn render(dir: &PathBuf, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["render", "haproxy", "--specs"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn prints_what_the_library_renders_and_writes_it_with_out() {
    let dir = spec_dir("ok", SPEC);
    let out = render(&dir, &["--site", "par1"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let files = drover::spec::load_dir(&dir).unwrap();
    let fleet = drover::spec::validate::check(&files).unwrap();
    let expected = drover::render::haproxy_config(&fleet, 0).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);

    let file = dir.join("haproxy.cfg");
    let out = render(&dir, &["--site", "par1", "--out", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), expected);
}

#[test]
fn unknown_site_names_the_known_ones() {
    let dir = spec_dir("unknown-site", SPEC);
    let out = render(&dir, &["--site", "lon1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no site `lon1`") && err.contains("known sites: par1"), "{err}");
}

#[test]
fn farm_without_listener_address_is_an_error_naming_it() {
    let dir = spec_dir("no-listen", &SPEC.replace(r#"lb: { listen: "127.0.0.1:8101" }"#, ""));
    let out = render(&dir, &["--site", "par1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("farm `par1-f01` has no `lb.listen`"), "{err}");
}

#[test]
fn invalid_spec_renders_nothing() {
    let dir = spec_dir("invalid", &SPEC.replace("10.1.1.12", "10.1.1.300"));
    let out = render(&dir, &["--site", "par1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fleet.yaml:"));
}

#[test]
fn site_is_required() {
    let dir = spec_dir("usage", SPEC);
    let out = render(&dir, &[]);
    assert_eq!(out.status.code(), Some(64));
}
