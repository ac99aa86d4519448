//! The HTTP API: routes, and serving them with graceful shutdown. Handlers only parse,
//! authorize, call the store or a service, and shape the answer.

mod alerts;
pub mod auth;
mod body;
mod churn;
pub mod error;
mod events;
mod lago;
mod llm;
mod openmeter;
mod ops;
mod otlp;
mod reports;
pub mod resources;
mod seats;
mod servers;
mod ui;
mod usage;

use crate::app::AppState;
use axum::Router;
use axum::routing::{get, post};
use error::ApiError;
use std::future::Future;
use tally_domain::UsageType;
use tally_domain::entities::{Organization, Plan, Subscription, Team, User};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub fn router(app: AppState) -> Router {
    let max_in_flight = app.max_concurrent_requests;
    Router::new()
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .route("/ui/session", post(ui::sign_in).delete(ui::sign_out))
        .route("/v1/me", get(ui::me))
        .route("/metrics", get(ops::metrics))
        .route("/v1/events", post(events::post_events))
        .route("/compat/lago/api/v1/events", post(lago::create))
        .route("/compat/lago/api/v1/events/batch", post(lago::batch))
        .route("/compat/openmeter/api/v1/events", post(openmeter::ingest_events))
        .route("/compat/openmeter/api/v1/meters", get(openmeter::list_meters).post(openmeter::create_meter))
        .route(
            "/compat/openmeter/api/v1/meters/{id}",
            get(openmeter::get_meter).put(openmeter::update_meter).delete(openmeter::delete_meter),
        )
        .route("/compat/openmeter/api/v1/meters/{id}/query", get(openmeter::query_get).post(openmeter::query_post))
        .route("/v1/user-reports", get(reports::user_reports))
        .route("/v1/user-reports/rebuild", post(reports::rebuild))
        .route("/v1/user-reports/runs", get(reports::runs))
        .route("/v1/otlp/v1/traces", post(otlp::traces))
        .route("/v1/usage", get(usage::series))
        .route("/v1/spend", get(usage::spend))
        .route("/v1/organizations/{id}/usage/totals", get(usage::organization_totals))
        .route("/v1/users/{id}/usage/totals", get(usage::user_totals))
        .route("/v1/users/{id}/llm/summary", get(llm::user_summary))
        .route("/v1/users/{id}/llm/breakdown", get(llm::user_breakdown))
        .route("/v1/users/{id}/llm/monthly", get(llm::user_monthly))
        .route("/v1/users/{id}/llm/requests", get(llm::user_requests))
        .route("/v1/llm/activity", get(llm::activity))
        .route("/v1/llm/prices", get(llm::prices))
        .route("/v1/llm/prices/{model}", axum::routing::put(llm::put_price).delete(llm::delete_price))
        .route("/v1/llm/unpriced-models", get(llm::unpriced_models))
        .route("/v1/organizations/{id}/llm/summary", get(llm::organization_summary))
        .route("/v1/reports/churn", get(churn::churn))
        .route("/v1/reports/churn/risers", get(churn::risers))
        .route("/v1/reports/runs", get(churn::runs))
        .route("/v1/users/{id}/churn", get(churn::user_churn))
        .route("/v1/alerts", get(alerts::alerts))
        .route("/v1/alerts/{id}/resolve", post(alerts::resolve))
        .route("/v1/alert-rules", get(alerts::list_rules).post(alerts::create_rule))
        .route("/v1/alert-rules/{id}", get(alerts::read_rule).put(alerts::replace_rule).delete(alerts::delete_rule))
        .route("/v1/notification-channels", get(alerts::list_channels).post(alerts::create_channel))
        .route("/v1/notification-channels/{id}", get(alerts::read_channel).delete(alerts::delete_channel))
        .route("/v1/notifications/deliveries", get(alerts::deliveries))
        .route("/v1/users/{id}/entitlements", get(alerts::entitlements))
        .route("/v1/audit-events", post(seats::post_audit_events).get(seats::list_audit_events))
        .route("/v1/organizations/{id}/seats", get(seats::organization_seats))
        .route("/v1/organizations/{id}/license-ledger", get(seats::organization_ledger))
        .route("/v1/organizations/{id}/invoice-preview", get(seats::organization_invoice))
        .route("/v1/servers", get(servers::list).post(servers::register))
        .route("/v1/servers/{id}", get(servers::read))
        .route("/v1/servers/{id}/rotate-key", post(servers::rotate_key))
        .route("/v1/servers/{id}/seats", get(seats::server_seats))
        .route("/v1/servers/{id}/license-ledger", get(seats::server_ledger))
        .route("/v1/servers/{id}/invoice-preview", get(seats::server_invoice))
        .route("/v1/remote/analytics", post(servers::push))
        .route("/v1/remote/analytics/status", get(servers::status))
        .route("/v1/jobs/ledger/run", post(seats::run_ledger))
        .merge(resources::routes::<Organization>("/v1/organizations"))
        .merge(resources::routes::<Team>("/v1/teams"))
        .merge(resources::routes::<User>("/v1/users"))
        .merge(resources::routes::<Plan>("/v1/plans"))
        .merge(resources::routes::<Subscription>("/v1/subscriptions"))
        .merge(resources::routes::<UsageType>("/v1/usage-types"))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            axum::response::IntoResponse::into_response(error::internal("handler panicked"))
        }))
        // Overload answers at once with 503 and `Retry-After` instead of queueing into timeouts.
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(|_: tower::BoxError| async { error::overloaded() }))
                .load_shed()
                .concurrency_limit(max_in_flight),
        )
        // Probes are answered even at capacity: a busy server is not a dead one.
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(listener: TcpListener, app: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router(app)).with_graceful_shutdown(shutdown).await
}
