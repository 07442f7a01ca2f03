//! The daemon's HTTP endpoints: `/healthz` (is the loop turning?),
//! `/readyz` (is a valid spec in force and the fleet observed?), `/metrics`
//! (Prometheus, OpenMetrics text), `/status` (the `DaemonStatus` as
//! JSON) and the status page (`/`, its live part `/live`, and
//! `/assets/page.css`, `/assets/page.js`; see `web`). Read-only: nothing here changes the fleet or the loop, so the
//! endpoints have no authentication and serve on loopback unless remote
//! access is asked for explicitly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::state::Shared;

/// `/healthz` fails once the loop is this late: it has worked this long
/// without turning, or not woken up this long after the end of a wait it
/// chose (a resync of any length is no lateness).
pub const HEARTBEAT_STALE_AFTER: Duration = Duration::from_secs(60);

/// Connections served at once; more wait in the listen backlog until one
/// ends. Bounds the file descriptors the endpoints can take from the
/// reconcile loop (SSH, LB connections).
pub const MAX_CONNECTIONS: usize = 64;

/// A client has this long to send a request's headers, from when the
/// connection opens or the previous response was sent (an idle keep-alive
/// connection is closed after it).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// No connection lives longer (a client that reads its response slowly).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// What prometheus-client writes (OpenMetrics 1.0 text).
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `/healthz` answers 503 when the loop is later than this.
    pub stale_after: Duration,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub connection_lifetime: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stale_after: HEARTBEAT_STALE_AFTER,
            max_connections: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
            connection_lifetime: CONNECTION_LIFETIME,
        }
    }
}

/// Listens on `addr` (`host:port`). A host that resolves to anything but
/// loopback is refused unless `allow_remote`: the endpoints show the whole
/// fleet to whoever can reach them.
pub async fn bind(addr: &str, allow_remote: bool) -> Result<TcpListener, String> {
    let resolved: Vec<SocketAddr> =
        tokio::net::lookup_host(addr).await.map_err(|e| format!("cannot serve HTTP on {addr}: {e}"))?.collect();
    if resolved.is_empty() {
        return Err(format!("cannot serve HTTP on {addr}: it resolves to no address"));
    }
    if !allow_remote && let Some(remote) = resolved.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "refusing to serve HTTP on {addr} ({}): not a loopback address, and remote access was not allowed \
             (the endpoints have no authentication)",
            remote.ip()
        ));
    }
    TcpListener::bind(&resolved[..]).await.map_err(|e| format!("cannot serve HTTP on {addr}: {e}"))
}

/// Serves the endpoints until `shutdown` completes, then lets requests in
/// progress finish.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, shared, Options::default(), shutdown).await
}

/// `serve` with other limits than the defaults.
///
/// HTTP/1 only. At most `max_connections` at once: the next connection is
/// accepted when one ends (until then it waits in the kernel's backlog, so
/// the descriptors the endpoints hold stay bounded). A connection that sends
/// no complete request headers within `header_timeout` (slow or silent
/// clients, idle keep-alive) is closed, and none lives past
/// `connection_lifetime`. On shutdown the listener closes and requests in
/// progress get a few seconds to finish.
pub async fn serve_with(
    listener: TcpListener,
    shared: Arc<Shared>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(shared, options);
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(options.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => s.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before
                    // it was accepted: wait a little instead of spinning.
                    tracing::debug!("HTTP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        let lifetime = options.connection_lifetime;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(lifetime, conn).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

#[derive(Clone)]
struct Endpoints {
    shared: Arc<Shared>,
    options: Options,
}

fn router(shared: Arc<Shared>, options: Options) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/", get(page))
        .route("/live", get(live))
        .route("/assets/page.css", get(|| async { asset("text/css; charset=utf-8", super::web::CSS) }))
        .route("/assets/page.js", get(|| async { asset("text/javascript; charset=utf-8", super::web::JS) }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: try /, /healthz, /readyz, /metrics or /status\n") })
        .with_state(Endpoints { shared, options })
}

async fn healthz(State(e): State<Endpoints>) -> Response {
    match e.shared.liveness(e.options.stale_after) {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, body).into_response(),
    }
}

async fn readyz(State(e): State<Endpoints>) -> Response {
    let ready = e.shared.status().ready();
    match ready {
        Ok(()) => match e.shared.status().readiness_note() {
            None => (StatusCode::OK, "ready").into_response(),
            Some(note) => (StatusCode::OK, format!("ready; {note}")).into_response(),
        },
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
    }
}

async fn metrics(State(e): State<Endpoints>) -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], e.shared.metrics.render()).into_response()
}

async fn status(State(e): State<Endpoints>) -> Response {
    let json = serde_json::to_string(&*e.shared.status());
    match json {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the status: {err}")).into_response(),
    }
}

/// What the page's responses carry: scripts and styles only from this
/// origin's files (no inline script or style), nothing from elsewhere, never
/// framed, no MIME sniffing, no referrer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page_headers(content_type: &'static str, cache: &'static str) -> [(header::HeaderName, &'static str); 6] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, cache),
    ]
}

async fn page(State(e): State<Endpoints>) -> Response {
    let html = super::web::page(&e.shared.status());
    (page_headers("text/html; charset=utf-8", "no-store"), html).into_response()
}

async fn live(State(e): State<Endpoints>) -> Response {
    let html = super::web::live(&e.shared.status());
    (page_headers("text/html; charset=utf-8", "no-store"), html).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (page_headers(content_type, "no-cache"), body).into_response()
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;
    use crate::daemon::metrics::tests::{parse, value};
    use crate::daemon::state::{DaemonStatus, Rejected};
    use crate::plan::Memory;
    use crate::sim::fleetgen::{self, Change, Shape};
    use crate::sim::{Sim, SimConfig};

    /// A daemon's endpoints on an ephemeral loopback port; dropping the
    /// sender (or sending) shuts them down.
    async fn start(
        shared: Arc<Shared>,
        options: Options,
    ) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
        let listener = bind("127.0.0.1:0", false).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(listener, shared, options, async move {
            let _ = stopped.await;
        }));
        (base, stop, server)
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
    }

    /// (status code, Content-Type, body)
    async fn get(base: &str, path: &str) -> (u16, String, String) {
        let r = client().get(format!("{base}{path}")).send().await.unwrap();
        let code = r.status().as_u16();
        let ct = r.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (code, ct, r.text().await.unwrap())
    }

    fn status_before_any_spec() -> DaemonStatus {
        DaemonStatus {
            version: "0.1.0-test".into(),
            fleet_kind: "simulated".into(),
            rollout: crate::daemon::state::Rollout { phase: "starting".into(), ..Default::default() },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn endpoints_serve_readiness_metrics_and_status() {
        let shared = Arc::new(Shared::new(status_before_any_spec()));
        let (base, stop, server) = start(shared.clone(), Options::default()).await;

        let (code, ct, body) = get(&base, "/readyz").await;
        assert_eq!((code, body.as_str()), (503, "not ready: no spec loaded yet"));
        assert!(ct.starts_with("text/plain"), "{ct}");
        let (code, _, body) = get(&base, "/healthz").await;
        assert_eq!((code, body.as_str()), (200, "ok"));

        // A spec applies and the first pass observes the fleet.
        let fleet = fleetgen::fleet(&Shape { change: Change::NONE, ..Shape::default() }).unwrap();
        let obs = Sim::new(&fleet, SimConfig::new(&fleet, 1)).observe();
        let memory = Memory::default();
        {
            let mut st = shared.status();
            st.spec.generation = 1;
            st.spec.digest = "d1".into();
            st.rollout.phase = "converged".into();
            st.rollout.passes = 1;
            st.rollout.nodes_total = fleet.nodes.len() as u64;
            st.fleet = crate::status::view(&fleet, &obs, &memory, &Default::default());
        }
        shared.metrics.spec_applied(1, Some("0123abc"), "d1");
        shared.metrics.fleet_observed(&fleet, &obs, &memory);
        shared.metrics.reconcile_pass(Duration::from_millis(12));

        let (code, _, body) = get(&base, "/readyz").await;
        assert_eq!((code, body.as_str()), (200, "ready"));

        let (code, ct, body) = get(&base, "/metrics").await;
        assert_eq!(code, 200);
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        let samples = parse(&body);
        assert_eq!(value(&samples, "drover_spec_generation", &[]), Some(1.0));
        assert_eq!(value(&samples, "drover_spec_info", &[("commit", "0123abc"), ("digest", "d1")]), Some(1.0));
        assert_eq!(value(&samples, "drover_nodes", &[("state", "serving")]), Some(fleet.nodes.len() as f64));

        let (code, ct, body) = get(&base, "/status").await;
        assert_eq!(code, 200);
        assert_eq!(ct, "application/json");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["spec"]["generation"], 1);
        assert_eq!(doc["rollout"]["phase"], "converged");
        assert_eq!(doc["version"], "0.1.0-test");
        let sites = doc["fleet"]["sites"].as_array().expect("fleet.sites");
        assert_eq!(sites.len(), fleet.sites.len());
        assert!(doc["last_error"].is_null());

        // The loop's error makes it unready, with the reason.
        shared.status().last_error = Some("observe: site eu-1 LB: connection refused".into());
        let (code, _, body) = get(&base, "/readyz").await;
        assert_eq!((code, body.as_str()), (503, "not ready: observe: site eu-1 LB: connection refused"));

        let (code, _, _) = get(&base, "/metricz").await;
        assert_eq!(code, 404);
        let (code, _, _) = get(&base, "/status/extra").await;
        assert_eq!(code, 404);
        let r = client().post(format!("{base}/status")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405, "read-only");

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(client().get(format!("{base}/healthz")).send().await.is_err(), "stopped serving");
    }

    /// (status code, the response's headers, body)
    async fn get_with_headers(base: &str, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let r = client().get(format!("{base}{path}")).send().await.unwrap();
        (r.status().as_u16(), r.headers().clone(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn the_status_page_and_its_assets_are_served_read_only_under_a_strict_policy() {
        let shared = Arc::new(Shared::new(status_before_any_spec()));
        let (base, _stop, _server) = start(shared.clone(), Options::default()).await;
        for (path, ct, needle) in [
            ("/", "text/html; charset=utf-8", "<main id=\"live\""),
            ("/live", "text/html; charset=utf-8", "<div id=\"state\""),
            ("/assets/page.css", "text/css; charset=utf-8", ".s-at-target"),
            ("/assets/page.js", "text/javascript; charset=utf-8", "fetch(\"/live\""),
        ] {
            let (code, headers, body) = get_with_headers(&base, path).await;
            assert_eq!(code, 200, "{path}");
            let h = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            assert_eq!(h("content-type"), ct, "{path}");
            assert_eq!(h("content-security-policy"), CONTENT_SECURITY_POLICY, "{path}");
            assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
            assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
            assert!(body.contains(needle), "{path}: {body}");
            let r = client().post(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 405, "{path} is read-only");
        }
        for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
            assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"), "no inline script or style");
        // The page has none: no <style>, no style= or on...= attribute, one external script.
        let (_, _, page) = get_with_headers(&base, "/").await;
        assert!(!page.contains("<style") && !page.contains(" style=") && !page.contains(" onload="), "{page}");
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains("<script src=\"/assets/page.js\" defer></script>"));
        // The live part follows the document.
        shared.status().rollout.phase = "rolling".into();
        let (_, _, live) = get_with_headers(&base, "/live").await;
        assert!(live.contains("data-phase=\"rolling\""), "{live}");
        let (code, _, _) = get_with_headers(&base, "/assets/other.js").await;
        assert_eq!(code, 404);
    }

    #[tokio::test]
    async fn readyz_names_a_rejected_spec() {
        let mut st = status_before_any_spec();
        st.spec.rejected = Some(Rejected {
            commit: None,
            digest: "d0".into(),
            at_ms: 0,
            error: "fleet.yaml:3:7: error: unknown key `farmz`\n  hint: farms".into(),
        });
        let (base, _stop, _server) = start(Arc::new(Shared::new(st)), Options::default()).await;
        let (code, _, body) = get(&base, "/readyz").await;
        assert_eq!(code, 503);
        assert_eq!(body, "not ready: no valid spec yet: fleet.yaml:3:7: error: unknown key `farmz`");
    }

    #[tokio::test]
    async fn healthz_fails_when_the_loop_stops_turning() {
        let shared = Arc::new(Shared::new(status_before_any_spec()));
        let options = Options { stale_after: Duration::from_millis(500), ..Options::default() };
        let (base, _stop, _server) = start(shared.clone(), options).await;
        shared.beat();
        let (code, _, body) = get(&base, "/healthz").await;
        assert_eq!((code, body.as_str()), (200, "ok"));

        // Working (observing, planning) for longer than the limit: stale.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (code, _, body) = get(&base, "/healthz").await;
        assert_eq!(code, 503, "{body}");
        assert!(body.starts_with("stale: the reconcile loop last turned "), "{body}");
        assert!(body.ends_with("s late (limit 0.5 s)"), "{body}");

        shared.beat();
        let (code, _, _) = get(&base, "/healthz").await;
        assert_eq!(code, 200);

        // Waiting a resync longer than the limit is no lateness ...
        shared.waiting(Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (code, _, body) = get(&base, "/healthz").await;
        assert_eq!((code, body.as_str()), (200, "ok"));
        // ... not waking up after it is.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let (code, _, body) = get(&base, "/healthz").await;
        assert_eq!(code, 503, "{body}");
    }

    /// A TCP connection that has sent `bytes` and then nothing.
    async fn slow_client(base: &str, bytes: &[u8]) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s
    }

    /// Whether the server closed `s` within `limit` (it reads EOF or a reset).
    async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        let t0 = tokio::time::Instant::now();
        loop {
            let left = limit.saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, s.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                // A 408 or the like before closing: keep reading.
                Ok(Ok(_)) => {}
            }
        }
    }

    #[tokio::test]
    async fn slow_and_idle_clients_are_closed_and_healthz_still_answers() {
        let shared = Arc::new(Shared::new(status_before_any_spec()));
        shared.beat();
        let options = Options { header_timeout: Duration::from_millis(500), ..Options::default() };
        let (base, _stop, _server) = start(shared.clone(), options).await;
        // 40 clients: half send nothing, half stop in the middle of their headers.
        let mut slow = Vec::new();
        for i in 0..40 {
            let bytes: &[u8] = if i % 2 == 0 { b"" } else { b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " };
            slow.push(slow_client(&base, bytes).await);
        }
        // An idle keep-alive connection after one answered request.
        let mut idle = slow_client(&base, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let t0 = tokio::time::Instant::now();
        let (code, _, _) = get(&base, "/healthz").await;
        assert_eq!(code, 200);
        assert!(t0.elapsed() < Duration::from_secs(3), "healthz took {:?}", t0.elapsed());
        for (i, s) in slow.iter_mut().enumerate() {
            assert!(closed_within(s, Duration::from_secs(10)).await, "slow client {i} is still open");
        }
        assert!(
            closed_within(&mut idle, Duration::from_secs(10)).await,
            "the idle keep-alive connection is still open"
        );
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_until_one_ends() {
        let shared = Arc::new(Shared::new(status_before_any_spec()));
        shared.beat();
        let options = Options { max_connections: 8, header_timeout: Duration::from_millis(1500), ..Options::default() };
        let (base, _stop, _server) = start(shared.clone(), options).await;
        let mut silent = Vec::new();
        for _ in 0..8 {
            silent.push(slow_client(&base, b"").await);
        }
        // The ninth waits in the backlog while eight silent ones hold every slot ...
        let t0 = tokio::time::Instant::now();
        let ninth = tokio::spawn({
            let base = base.clone();
            async move { get(&base, "/healthz").await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!ninth.is_finished(), "a ninth connection was served while eight held every slot");
        // ... and is served once the header timeout closed them.
        let (code, _, _) = ninth.await.unwrap();
        assert_eq!(code, 200);
        assert!(t0.elapsed() >= Duration::from_millis(1000), "{:?}", t0.elapsed());
        for s in silent.iter_mut() {
            assert!(closed_within(s, Duration::from_secs(5)).await);
        }
    }

    #[tokio::test]
    async fn bind_keeps_to_loopback_unless_remote_is_allowed() {
        let e = bind("10.1.2.3:80", false).await.unwrap_err();
        assert!(e.contains("10.1.2.3:80") && e.contains("not a loopback address"), "{e}");
        let e = bind("0.0.0.0:0", false).await.unwrap_err();
        assert!(e.contains("0.0.0.0:0") && e.contains("not a loopback address"), "{e}");
        // Asked for explicitly, every interface is fine.
        let any = bind("0.0.0.0:0", true).await.unwrap();
        assert!(any.local_addr().unwrap().ip().is_unspecified());

        let local = bind("127.0.0.1:0", false).await.unwrap();
        let taken = local.local_addr().unwrap().to_string();
        let e = bind(&taken, false).await.unwrap_err();
        assert!(e.starts_with(&format!("cannot serve HTTP on {taken}: ")), "{e}");
        let e = bind("no port here", false).await.unwrap_err();
        assert!(e.contains("no port here"), "{e}");
    }
}
