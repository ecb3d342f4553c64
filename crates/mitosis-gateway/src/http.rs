//! The gateway's HTTP API.
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `POST /invoke/{function}` | runs the handler with the body as its argument | 200 with the runtime's JSON (`result`, `output`); 404 unknown function; 413 body over 6 MiB; 500 handler raised or instance died (JSON `error`); 503 no worker; 504 timeout |
//! | `GET /functions` | lists the registrations | 200 JSON |
//! | `GET /functions/{function}` | one registration and its instances' counts | 200 JSON, 404 |
//! | `PUT /functions/{function}` | registers or replaces (JSON [`FunctionConfig`]) | 201 new, 200 replaced, 400 malformed |
//! | `DELETE /functions/{function}` | removes it, ending its instances and seed | 204, 404 |
//! | `GET /workers` | the workers this gateway places instances on | 200 JSON (`addr`, `up`) |
//! | `GET /metrics` | Prometheus text | 200 |
//! | `GET /healthz` | liveness | 200 `ok` |
//!
//! With etcd ([`crate::cluster`]), `PUT` and `DELETE` write the
//! registration there and answer once this gateway has applied the write
//! (503 if etcd did not take it, or the gateway did not see it in time).
//!
//! Successful invocations carry `x-mitosis-start` (`cold`, `fork` or
//! `warm`), `x-mitosis-instance` and `x-mitosis-worker`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use mitosis_proto::instance::MAX_BODY;
use serde_json::json;

use crate::function::{validate_name, FunctionConfig};
use crate::gateway::Gateway;
use crate::pool::SeedState;

/// The router of the API over `gateway`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let limit = usize::try_from(MAX_BODY).unwrap_or(usize::MAX);
    Router::new()
        .route("/invoke/{function}", post(invoke))
        .route("/functions", get(list))
        .route("/functions/{function}", get(show).put(register).delete(remove))
        .route("/workers", get(workers))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint (see `mitosis gateway --help`)") })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gateway)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

fn body_error(rejection: BytesRejection) -> Response {
    let status = rejection.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("the request body exceeds the limit of {MAX_BODY} bytes")
    } else {
        rejection.body_text()
    };
    error(status, message)
}

/// How much of an oversized request body is read (and thrown away) before
/// the 413 goes out; past it the connection is closed under the client.
const DRAIN_LIMIT: u64 = 64 << 20;

/// Reads an invocation's body, of at most [`MAX_BODY`] bytes. A longer one
/// is read on to its end (up to [`DRAIN_LIMIT`]) before the 413 is sent:
/// closing the connection while the client still sends would show it a
/// broken pipe or a reset, never the answer that says why.
async fn read_invocation_body(mut body: Body) -> Result<Vec<u8>, Response> {
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}")))?;
        let Some(data) = frame.data_ref() else { continue };
        total += data.len() as u64;
        if total <= MAX_BODY {
            kept.extend_from_slice(data);
        } else if total > DRAIN_LIMIT {
            break;
        }
    }
    if total > MAX_BODY {
        return Err(error(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body exceeds the limit of {MAX_BODY} bytes")));
    }
    Ok(kept)
}

async fn invoke(State(g): State<Arc<Gateway>>, Path(function): Path<String>, body: Body) -> Response {
    let body = match read_invocation_body(body).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    match g.invoke(&function, body).await {
        Ok(done) => {
            let mut resp = (StatusCode::OK, done.body).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert("x-mitosis-start", HeaderValue::from_static(done.start.as_str()));
            if let Ok(v) = HeaderValue::from_str(&done.instance) {
                h.insert("x-mitosis-instance", v);
            }
            if let Ok(v) = HeaderValue::from_str(&done.worker) {
                h.insert("x-mitosis-worker", v);
            }
            resp
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_server_error() {
                tracing::info!(%function, error = %e, "invocation failed");
            }
            error(status, e)
        }
    }
}

fn describe(g: &Gateway, name: &str) -> Option<serde_json::Value> {
    let f = g.function(name)?;
    let m = g.memory_of(name);
    let seed = match f.seed() {
        SeedState::Ready { worker, id, shared, .. } => json!({ "worker": worker, "id": id, "shared": shared }),
        _ => serde_json::Value::Null,
    };
    // With etcd: the seeds other gateways published that this one may fork from.
    let cluster_seeds: Option<Vec<serde_json::Value>> = g.cluster().map(|c| {
        c.shared_seeds(name, &g.seed_prefix(&f)).into_iter().map(|(worker, id, _)| json!({ "worker": worker, "id": id })).collect()
    });
    Some(json!({
        "name": name,
        "config": f.config,
        "policy": f.policy,
        "instances": f.counts(),
        "memory": { "instances_bytes": m.instances_bytes, "seed_bytes": m.seed_bytes },
        "seed": seed,
        "cluster_seeds": cluster_seeds,
    }))
}

async fn list(State(g): State<Arc<Gateway>>) -> Response {
    let all: Vec<serde_json::Value> = g.functions().iter().filter_map(|f| describe(&g, &f.name)).collect();
    axum::Json(all).into_response()
}

async fn show(State(g): State<Arc<Gateway>>, Path(function): Path<String>) -> Response {
    match describe(&g, &function) {
        Some(v) => axum::Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no function {function:?} is registered")),
    }
}

async fn register(State(g): State<Arc<Gateway>>, Path(function): Path<String>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) => return body_error(r),
    };
    if let Err(m) = validate_name(&function) {
        return error(StatusCode::BAD_REQUEST, m);
    }
    let config: FunctionConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed registration: {e}")),
    };
    if let Err(m) = config.validate() {
        return error(StatusCode::BAD_REQUEST, m);
    }
    let created = match g.cluster() {
        Some(c) => match c.put_function(&function, &config).await {
            Ok(created) => created,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        None => g.register(&function, config),
    };
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    (status, axum::Json(describe(&g, &function))).into_response()
}

async fn remove(State(g): State<Arc<Gateway>>, Path(function): Path<String>) -> Response {
    let removed = match g.cluster() {
        Some(c) => match c.delete_function(&function).await {
            Ok(removed) => removed,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        None => g.unregister(&function),
    };
    if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no function {function:?} is registered"))
    }
}

async fn workers(State(g): State<Arc<Gateway>>) -> Response {
    axum::Json(g.workers_status()).into_response()
}

async fn metrics(State(g): State<Arc<Gateway>>) -> Response {
    let text = g.metrics.render(&g);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(gateway)).with_graceful_shutdown(shutdown).await
}
