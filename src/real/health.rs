//! The health check: HTTP to the node itself (never through the LB),
//! expecting the policy's status and, when asked, the release marker
//! (`release=<id>` in the body, or an `X-Release: <id>` header).

use crate::model::{HealthCheck, ReleaseId};

pub struct Checker {
    client: reqwest::Client,
    policy: HealthCheck,
}

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

    /// One check; `Err` says what was wrong.
    pub async fn check_once(&self, address: &str, port: u16, release: Option<&ReleaseId>) -> Result<(), String> {
        let policy = &self.policy;
        let host = if address.contains(':') { format!("[{address}]") } else { address.to_string() };
        let url = format!("http://{host}:{port}{}", policy.path);
        let resp =
            self.client.get(&url).send().await.map_err(|e| format!("GET {url}: {}", super::ssh::error_chain(&e)))?;
        let status = resp.status().as_u16();
        let header = resp.headers().get("x-release").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.text().await.unwrap_or_default();
        if status != policy.expect_status {
            return Err(format!("GET {url}: status {status}, expected {}", policy.expect_status));
        }
        if let (true, Some(r)) = (policy.expect_release_marker, release) {
            let marker = format!("release={r}");
            let in_body = body.split_whitespace().any(|w| w == marker);
            if !in_body && header.as_deref() != Some(&*r.0) {
                let seen: String = body.chars().take(120).collect();
                return Err(format!("GET {url}: no release marker `{marker}` (body starts {seen:?})"));
            }
        }
        Ok(())
    }

    /// Up to `1 + retries` checks, one second apart.
    pub async fn check(&self, address: &str, port: u16, release: Option<&ReleaseId>) -> Result<(), String> {
        let mut last = String::new();
        let retries = self.policy.retries;
        for attempt in 0..=retries {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            match self.check_once(address, port, release).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(format!("health check failed {} times; last: {last}", retries + 1))
    }
}
