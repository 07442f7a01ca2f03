//! The daemon's HTTP endpoints: `/healthz` (is the loop turning?),
//! `/readyz` (is a valid spec in force and the fleet observed?), `/metrics`
//! (Prometheus, OpenMetrics text) and `/status` (the `DaemonStatus` as
//! JSON). Read-only: nothing here changes the fleet or the loop, so the
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

/// `/healthz` fails once the loop has not turned for this long: a loop
/// turns at least once per resync, which is far shorter.
pub const HEARTBEAT_STALE_AFTER: Duration = Duration::from_secs(60);

/// What prometheus-client writes (OpenMetrics 1.0 text).
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `/healthz` answers 503 when the loop's last turn is older than this.
    pub stale_after: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { stale_after: HEARTBEAT_STALE_AFTER }
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
pub async fn serve_with(
    listener: TcpListener,
    shared: Arc<Shared>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared, options)).with_graceful_shutdown(shutdown).await
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
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: try /healthz, /readyz, /metrics or /status\n") })
        .with_state(Endpoints { shared, options })
}

async fn healthz(State(e): State<Endpoints>) -> Response {
    let age = Duration::from_millis(crate::real::reconcile::now_ms().saturating_sub(e.shared.last_beat_ms()));
    if age <= e.options.stale_after {
        (StatusCode::OK, "ok").into_response()
    } else {
        let body = format!(
            "stale: the reconcile loop last turned {:.1} s ago (limit {} s)",
            age.as_secs_f64(),
            e.options.stale_after.as_secs_f64()
        );
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
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
        let options = Options { stale_after: Duration::from_millis(500) };
        let (base, _stop, _server) = start(shared.clone(), options).await;
        shared.beat();
        let (code, _, body) = get(&base, "/healthz").await;
        assert_eq!((code, body.as_str()), (200, "ok"));

        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (code, _, body) = get(&base, "/healthz").await;
        assert_eq!(code, 503, "{body}");
        assert!(body.starts_with("stale: the reconcile loop last turned "), "{body}");
        assert!(body.ends_with("s ago (limit 0.5 s)"), "{body}");

        shared.beat();
        let (code, _, _) = get(&base, "/healthz").await;
        assert_eq!(code, 200);
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
