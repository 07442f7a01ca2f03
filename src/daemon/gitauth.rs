//! The credential of `--git`, kept out of files and command lines.
//!
//! A token written in the URL (`https://user:TOKEN@host/repo.git`) would be
//! stored in the checkout's `.git/config` (world-readable) and shown by `ps`
//! in git's arguments. Instead the URL git sees has no password; the
//! password reaches git through its environment only: a credential helper
//! set with `GIT_CONFIG_*` variables prints it from `DROVER_GIT_PASSWORD`.
//! The operator gives the token in `DROVER_GIT_TOKEN` or `--git-token-file`
//! (a token in the `--git` URL still works, but drover's own arguments are
//! visible in `ps`: drover warns).

use std::path::Path;

/// User name and password (token) for the Git remote.
#[derive(Clone, PartialEq, Eq)]
pub struct GitAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GitAuth {{ username: {:?}, password: <hidden> }}", self.username)
    }
}

/// User name used with a token when the URL names none (GitHub, Gitea and
/// GitLab accept any name with a token).
pub const DEFAULT_USER: &str = "drover";

/// `url` without its password, the user name it names (if any), and the password.
pub fn split_url(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None, None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_string(), None, None);
    };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    match userinfo.split_once(':') {
        Some((user, password)) => {
            let user = (!user.is_empty()).then(|| user.to_string());
            let clean = match &user {
                Some(u) => format!("{scheme}://{u}@{host}"),
                None => format!("{scheme}://{host}"),
            };
            (clean, user, Some(password.to_string()))
        }
        None => (url.to_string(), Some(userinfo.to_string()), None),
    }
}

/// The URL git is given and the credential, from `--git`, `--git-token-file`
/// and `DROVER_GIT_TOKEN` (file first, then the variable, then the URL).
pub fn resolve(
    url: &str,
    token_file: Option<&Path>,
    env_token: Option<String>,
) -> Result<(String, Option<GitAuth>), String> {
    let (clean, user, url_password) = split_url(url);
    let from_file = match token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("--git-token-file {}: {e}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    if url_password.is_some() {
        tracing::warn!(
            "the --git URL carries a password: it is visible in drover's arguments (ps); give it in DROVER_GIT_TOKEN or --git-token-file instead (git itself never sees it in a file or its arguments)"
        );
    }
    let password = from_file.or(env_token.filter(|t| !t.is_empty())).or(url_password);
    Ok((
        clean,
        password.map(|password| GitAuth { username: user.unwrap_or_else(|| DEFAULT_USER.to_string()), password }),
    ))
}

/// Environment for one git command that lets it authenticate with `auth`:
/// a credential helper (replacing any configured one) that answers from the
/// environment, so neither the token nor the helper's answer is in argv.
pub fn env(auth: &GitAuth) -> Vec<(&'static str, String)> {
    vec![
        ("GIT_CONFIG_COUNT", "2".into()),
        ("GIT_CONFIG_KEY_0", "credential.helper".into()),
        ("GIT_CONFIG_VALUE_0", String::new()),
        ("GIT_CONFIG_KEY_1", "credential.helper".into()),
        (
            "GIT_CONFIG_VALUE_1",
            r#"!f() { test "$1" = get && printf 'username=%s\npassword=%s\n' "$DROVER_GIT_USERNAME" "$DROVER_GIT_PASSWORD"; }; f"#
                .into(),
        ),
        ("DROVER_GIT_USERNAME", auth.username.clone()),
        ("DROVER_GIT_PASSWORD", auth.password.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url() {
        assert_eq!(
            split_url("https://bot:s3cr3t@git.example.net/ops/specs.git"),
            ("https://bot@git.example.net/ops/specs.git".into(), Some("bot".into()), Some("s3cr3t".into()))
        );
        assert_eq!(split_url("https://:tok@h/r.git"), ("https://h/r.git".into(), None, Some("tok".into())));
        assert_eq!(split_url("https://bot@h/r.git"), ("https://bot@h/r.git".into(), Some("bot".into()), None));
        assert_eq!(split_url("/srv/git/specs.git"), ("/srv/git/specs.git".into(), None, None));
        // An `@` in the path is not a user.
        assert_eq!(split_url("https://h/a@b.git"), ("https://h/a@b.git".into(), None, None));
        let (url, auth) = resolve("https://bot:inurl@h/r.git", None, Some("fromenv".into())).unwrap();
        assert_eq!(url, "https://bot@h/r.git");
        assert_eq!(auth.unwrap(), GitAuth { username: "bot".into(), password: "fromenv".into() });
        assert!(!format!("{:?}", resolve("https://h/r.git", None, Some("t0k".into())).unwrap()).contains("t0k"));
    }

    /// Real git asks the helper set through the environment, and gets the token.
    #[test]
    fn git_gets_the_token_from_the_environment_only() {
        let auth = GitAuth { username: "bot".into(), password: "s3cr3t-token".into() };
        let mut cmd = std::process::Command::new("git");
        cmd.args(["credential", "fill"]).envs(env(&auth)).env("GIT_TERMINAL_PROMPT", "0");
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        assert!(cmd.get_args().all(|a| !a.to_string_lossy().contains("s3cr3t")));
        let mut child = cmd.spawn().expect("git");
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(b"protocol=https\nhost=git.example.net\n\n").unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("username=bot\n") && text.contains("password=s3cr3t-token\n"), "{text}");
    }

    /// A token given in the URL is never written to the checkout's `.git/config`
    /// (world-readable) nor passed in git's arguments or quoted in its errors.
    #[tokio::test]
    async fn a_token_in_the_url_stays_out_of_the_checkout_and_the_errors() {
        let dir = std::env::temp_dir().join(format!("drover-gitauth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (url, auth) = resolve("http://bot:s3cr3t-token@127.0.0.1:9/specs.git", None, None).unwrap();
        let src = crate::daemon::source::GitSource {
            url,
            branch: "main".into(),
            subdir: ".".into(),
            checkout: dir.join("checkout"),
            interval: std::time::Duration::from_secs(1),
            auth,
        };
        let e = src.sync().await.unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
        let config = std::fs::read_to_string(dir.join("checkout/.git/config")).unwrap();
        assert!(config.contains("http://bot@127.0.0.1:9/specs.git") && !config.contains("s3cr3t"), "{config}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
