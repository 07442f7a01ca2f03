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

/// The HAProxy binary, or a panic saying how to get it (tests/run-all installs it).
fn haproxy() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
        .expect("`haproxy -c` checks the rendered configurations: apt-get install haproxy (tests/run-all does)")
}

/// Renders every site of the spec in `dir` and has HAProxy check each
/// configuration (`haproxy -c`: parsed, every name resolved or allowed not
/// to be, nothing bound). Returns how many sites were checked.
fn every_site_passes_haproxy_check(dir: &std::path::Path, out: &std::path::Path) -> usize {
    let files = drover::spec::load_dir(dir).unwrap();
    let fleet = match drover::spec::validate::check(&files) {
        Ok(f) => f,
        Err(d) => panic!("{}: {}", dir.display(), drover::spec::diag::render(&d, &files)),
    };
    std::fs::create_dir_all(out).unwrap();
    for (i, site) in fleet.sites.iter().enumerate() {
        let cfg = drover::render::haproxy_config(&fleet, i as u32)
            .unwrap_or_else(|e| panic!("{}: site `{}`: {e}", dir.display(), site.name));
        // The admin socket belongs to the SSH user drover logs into the LB
        // host as; that user exists there, not on the machine running the
        // test: check the file as the user running the test would own it.
        let owner = format!(" user {} ", fleet.ssh.user);
        let cfg = cfg.replace(&owner, &format!(" user {} ", current_user()));
        let file = out.join(format!("{}.cfg", site.name));
        std::fs::write(&file, &cfg).unwrap();
        let check = Command::new(haproxy()).arg("-c").arg("-f").arg(&file).output().unwrap();
        assert!(
            check.status.success(),
            "{}: site `{}`: haproxy -c refused {}:\n{}{}",
            dir.display(),
            site.name,
            file.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    fleet.sites.len()
}

#[test]
fn every_example_and_reference_site_passes_haproxy_check() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("render-haproxy-check");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("spec.yaml").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "examples: {dirs:?}");
    dirs.push(root.join("specs"));
    let mut sites = 0;
    for d in &dirs {
        let name = d.file_name().unwrap().to_string_lossy().to_string();
        sites += every_site_passes_haproxy_check(d, &out.join(name));
    }
    // The reference fleet alone has five sites: nothing was skipped.
    assert!(sites >= dirs.len() + 5, "{sites} sites checked");
}

#[test]
fn dns_named_nodes_pass_haproxy_check_without_resolving() {
    // Names under .invalid never resolve (RFC 2606): HAProxy must start the
    // server without an address instead of refusing the configuration.
    let text = SPEC
        .replace("address: 10.1.1.11", "address: web11.par1.drover-test.invalid")
        .replace("address: 10.1.1.12", "address: WEB12.par1.drover-test.invalid");
    let dir = spec_dir("dns-names", &text);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("render-haproxy-check-dns");
    assert_eq!(every_site_passes_haproxy_check(&dir, &out), 1);
}

/// The name of the user running the test (HAProxy checks that a socket's owner exists).
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
