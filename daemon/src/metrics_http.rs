//! The metrics listener: `/metrics` (Prometheus text) and `/healthz` (JSON), plain HTTP on a
//! separate socket, loopback by default.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

#[derive(Clone)]
struct AppState {
    registry: Registry,
    health: Health,
}

pub(crate) struct MetricsServer {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl MetricsServer {
    pub(crate) async fn bind(addr: SocketAddr, registry: Registry, health: Health) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen for metrics on {addr} (metrics.listen); is the port in use?")
        })?;
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .with_state(AppState { registry, health });
        Ok(Self { listener, router })
    }

    pub(crate) fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub(crate) async fn run(self, shutdown: CancellationToken) -> Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("the metrics listener failed")
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match crate::metrics::render(&state.registry) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let report = state.health.get();
    let status = if report.healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report.as_ref().clone())).into_response()
}
