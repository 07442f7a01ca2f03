//! The health check: HTTP to the node itself (never through the LB). It
//! proves that PHP serves the target from every worker, not that something
//! answers: a static file shows a new release 0.1 s after a link swap while
//! PHP-FPM keeps serving the old one for good (OPcache and the realpath cache
//! key on resolved paths; `../shared/research/php-fpm-release-switch.md`).
//!
//! One attempt:
//! - `requests` GETs of the health path (4 at a time), each with the
//!   policy's status and, when asked, the words `release=<id>` (a marker the
//!   endpoint's PHP code includes from the release tree) and `php=<version>`
//!   (the PHP tree the worker runs; checked when the endpoint says it), and
//!   `pid=<pid>` (the PHP-FPM worker that answered);
//! - PHP-FPM's pool status (`pool_status?json&full`): every pid seen above is
//!   one of the pool's workers (a static file or another server cannot
//!   answer one), and, after a switch, every worker started at or after the
//!   node's clock read before the reload (no worker still holds the old
//!   release in its caches).
//!
//! `dist/node/health.php` is the endpoint drover expects.

use std::collections::BTreeSet;

use futures::StreamExt;

use crate::model::{HealthCheck, PhpVersion, ReleaseId};

pub struct Checker {
    client: reqwest::Client,
    policy: HealthCheck,
}

/// What the node must show.
#[derive(Clone, Copy, Debug, Default)]
pub struct Expect<'a> {
    pub release: Option<&'a ReleaseId>,
    pub php: Option<&'a PhpVersion>,
    /// The node's clock (epoch seconds) read right before its PHP-FPM
    /// reload: every worker must have started at or after it.
    pub reloaded_at: Option<i64>,
}

/// Concurrent health requests within one attempt.
const CONCURRENT: usize = 4;

impl Checker {
    pub fn new(policy: &HealthCheck) -> Result<Checker, String> {
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Checker { client, policy: policy.clone() })
    }

    fn url(address: &str, port: u16, path: &str) -> String {
        let host = if address.contains(':') { format!("[{address}]") } else { address.to_string() };
        format!("http://{host}:{port}{path}")
    }

    async fn get(&self, url: &str) -> Result<(u16, String), String> {
        let resp =
            self.client.get(url).send().await.map_err(|e| format!("GET {url}: {}", super::ssh::error_chain(&e)))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| format!("GET {url}: {}", super::ssh::error_chain(&e)))?;
        Ok((status, body))
    }

    /// One request to the health path: the worker's pid.
    async fn one(&self, url: &str, expect: Expect<'_>) -> Result<u32, String> {
        let policy = &self.policy;
        let (status, body) = self.get(url).await?;
        let shown = || body.chars().take(120).collect::<String>();
        if status != policy.expect_status {
            return Err(format!("GET {url}: status {status}, expected {}", policy.expect_status));
        }
        let word = |key: &str| body.split_whitespace().find_map(|w| w.strip_prefix(key)).map(str::to_string);
        if let (true, Some(r)) = (policy.expect_release_marker, expect.release)
            && word("release=").as_deref() != Some(&*r.0)
        {
            return Err(format!(
                "GET {url}: PHP does not serve release {r} yet: no `release={r}` (body starts {:?})",
                shown()
            ));
        }
        if let (Some(php), Some(seen)) = (expect.php, word("php="))
            && seen != *php.0
        {
            return Err(format!("GET {url}: PHP {seen} answers, expected {php} (body starts {:?})", shown()));
        }
        let Some(pid) = word("pid=") else {
            return Err(format!(
                "GET {url}: no `pid=` word: not answered by a PHP-FPM worker, and only PHP is proof (body starts {:?})",
                shown()
            ));
        };
        pid.parse().map_err(|_| format!("GET {url}: `pid={pid}` is not a process id"))
    }

    /// One attempt; `Err` says what was wrong.
    pub async fn check_once(&self, address: &str, port: u16, expect: Expect<'_>) -> Result<(), String> {
        let url = Self::url(address, port, &self.policy.path);
        let answers: Vec<Result<u32, String>> =
            futures::stream::iter((0..self.policy.requests).map(|_| self.one(&url, expect)))
                .buffer_unordered(CONCURRENT)
                .collect()
                .await;
        let mut pids = BTreeSet::new();
        for a in answers {
            pids.insert(a?);
        }
        let status_url = Self::url(address, port, &format!("{}?json&full", self.policy.pool_status));
        let (status, body) = self.get(&status_url).await?;
        if status != 200 {
            return Err(format!("GET {status_url}: status {status}: PHP-FPM's pool status is needed as proof"));
        }
        let workers = parse_pool(&body).map_err(|e| format!("GET {status_url}: {e}"))?;
        if let Some(pid) = pids.iter().find(|p| !workers.iter().any(|w| w.pid == **p)) {
            return Err(format!(
                "{url} answered from pid {pid}, which is not a worker of the pool at {status_url}: not PHP-FPM's answer"
            ));
        }
        if let Some(since) = expect.reloaded_at {
            let old: Vec<String> = workers
                .iter()
                .filter(|w| w.started < since)
                .map(|w| format!("{} (started {})", w.pid, w.started))
                .collect();
            if !old.is_empty() {
                return Err(format!(
                    "{} of {} PHP-FPM workers started before the reload at {since} and may serve the old release: {}",
                    old.len(),
                    workers.len(),
                    old.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Up to `retries` attempts, one second apart.
    pub async fn check(&self, address: &str, port: u16, expect: Expect<'_>) -> Result<(), String> {
        let mut last = String::new();
        let attempts = self.policy.retries.max(1);
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            match self.check_once(address, port, expect).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(format!("health check failed {attempts} times; last: {last}"))
    }
}

/// One worker of PHP-FPM's pool status.
#[derive(Debug, PartialEq, Eq)]
pub struct Worker {
    pub pid: u32,
    /// Epoch seconds, on the node's clock.
    pub started: i64,
}

/// The workers of a `pm.status_path?json&full` answer.
pub fn parse_pool(body: &str) -> Result<Vec<Worker>, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the pool status is not PHP-FPM's JSON ({e})"))?;
    let Some(procs) = v.get("processes").and_then(|p| p.as_array()) else {
        return Err("the pool status lists no `processes` (ask for `?json&full`)".into());
    };
    procs
        .iter()
        .map(|p| {
            let pid = p.get("pid").and_then(|x| x.as_u64()).and_then(|x| u32::try_from(x).ok());
            let started = p.get("start time").and_then(|x| x.as_i64());
            match (pid, started) {
                (Some(pid), Some(started)) => Ok(Worker { pid, started }),
                _ => Err(format!("a process of the pool status has no `pid` or `start time`: {p}")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_status_of_php_fpm_is_read() {
        // Shape of php-fpm 8.2's `?json&full` (trimmed).
        let body = r#"{"pool":"www","process manager":"static","start time":1764570000,"processes":[
            {"pid":4101,"state":"Idle","start time":1764570100,"requests":3},
            {"pid":4102,"state":"Running","start time":1764570101,"requests":1}]}"#;
        assert_eq!(
            parse_pool(body).unwrap(),
            vec![Worker { pid: 4101, started: 1764570100 }, Worker { pid: 4102, started: 1764570101 }]
        );
        assert!(parse_pool(r#"{"pool":"www"}"#).unwrap_err().contains("json&full"));
        assert!(parse_pool("pool: www\n").unwrap_err().contains("not PHP-FPM's JSON"));
        assert!(parse_pool(r#"{"processes":[{"pid":1}]}"#).unwrap_err().contains("start time"));
    }

    /// A node's web server on loopback answering `health` for the health
    /// path and `pool` for the status page.
    async fn node(health: &'static str, pool: &'static str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = c.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let body = if req.starts_with("GET /fpm-status?json&full ") { pool } else { health };
                    let resp =
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                    let _ = c.write_all(resp.as_bytes()).await;
                });
            }
        });
        port
    }

    fn policy() -> HealthCheck {
        HealthCheck {
            path: "/health.php".into(),
            expect_status: 200,
            expect_release_marker: true,
            timeout: std::time::Duration::from_secs(5),
            retries: 1,
            pool_status: "/fpm-status".into(),
            requests: 3,
        }
    }

    const POOL: &str = r#"{"processes":[{"pid":41,"start time":1000},{"pid":42,"start time":1001}]}"#;

    #[tokio::test]
    async fn only_php_workers_started_after_the_reload_serving_the_target_pass() {
        let c = Checker::new(&policy()).unwrap();
        let r = ReleaseId("2026.11.2".into());
        let php = PhpVersion("8.3.14".into());
        let expect = |at| Expect { release: Some(&r), php: Some(&php), reloaded_at: at };
        let good = node("ok release=2026.11.2 php=8.3.14 pid=42\n", POOL).await;
        c.check_once("127.0.0.1", good, expect(Some(1000))).await.unwrap();
        // A worker older than the reload may still hold the old release.
        let e = c.check_once("127.0.0.1", good, expect(Some(1001))).await.unwrap_err();
        assert!(e.contains("1 of 2 PHP-FPM workers started before the reload"), "{e}");
        // A static file with the right marker is not proof.
        let static_file = node("release=2026.11.2\n", POOL).await;
        let e = c.check_once("127.0.0.1", static_file, expect(None)).await.unwrap_err();
        assert!(e.contains("no `pid=` word"), "{e}");
        // Nor an answer from a process that is not one of the pool's workers.
        let other = node("release=2026.11.2 php=8.3.14 pid=7\n", POOL).await;
        let e = c.check_once("127.0.0.1", other, expect(None)).await.unwrap_err();
        assert!(e.contains("pid 7, which is not a worker"), "{e}");
        // PHP still on the old release, or on the old PHP tree.
        let old = node("release=2026.11.1 php=8.3.14 pid=41\n", POOL).await;
        let e = c.check_once("127.0.0.1", old, expect(None)).await.unwrap_err();
        assert!(e.contains("does not serve release 2026.11.2"), "{e}");
        let old_php = node("release=2026.11.2 php=8.2.27 pid=41\n", POOL).await;
        let e = c.check_once("127.0.0.1", old_php, expect(None)).await.unwrap_err();
        assert!(e.contains("PHP 8.2.27 answers, expected 8.3.14"), "{e}");
        // No pool status to prove it with.
        let no_pool = node("release=2026.11.2 php=8.3.14 pid=41\n", "<html>not found</html>").await;
        let e = c.check_once("127.0.0.1", no_pool, expect(None)).await.unwrap_err();
        assert!(e.contains("not PHP-FPM's JSON"), "{e}");
    }
}
