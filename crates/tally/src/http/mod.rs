//! The HTTP API: routes, and serving them with graceful shutdown. Handlers only parse,
//! authorize, call the store or a service, and shape the answer.

mod alerts;
pub mod auth;
mod body;
mod churn;
pub mod error;
mod events;
mod extract;
mod lago;
mod llm;
mod openapi;
mod openmeter;
mod ops;
mod otlp;
pub mod rate_limit;
mod reports;
pub mod resources;
mod seats;
mod servers;
mod ui;
mod usage;

use crate::app::AppState;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use error::ApiError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tally_domain::UsageType;
use tally_domain::entities::{Organization, Plan, Subscription, Team, User};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(app: AppState) -> Router {
    let admission = Arc::new(Admission { turns: Arc::new(Semaphore::new(app.max_concurrent_requests)), wait: app.max_queue_wait });
    let (routes, _) = api_routes().split_for_parts();
    routes
        .fallback(|| async { ApiError::not_found("route") })
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            axum::response::IntoResponse::into_response(error::internal("handler panicked"))
        }))
        .layer(axum::middleware::from_fn_with_state(admission, admit))
        // Probes are answered even at capacity: a busy server is not a dead one.
        .merge(probe_routes().split_for_parts().0)
        // The path only: a query string may carry what must not be logged (a misplaced API key,
        // a filter on e-mail addresses).
        .layer(
            TraceLayer::new_for_http().make_span_with(
                |request: &Request| tracing::debug_span!("request", method = %request.method(), path = %request.uri().path()),
            ),
        )
        .with_state(app)
}

/// How many requests are served at once, and how long one may wait for its turn.
struct Admission {
    turns: Arc<Semaphore>,
    wait: Duration,
}

/// Overload answers 503 with `Retry-After` within `wait` instead of queueing into timeouts:
/// without a bound, every waiting request would hold a database connection and a thread, and
/// all of them would slow down together.
async fn admit(State(admission): State<Arc<Admission>>, request: Request, next: Next) -> Response {
    let turns = admission.turns.clone();
    let turn = if admission.wait.is_zero() {
        turns.try_acquire_owned().ok()
    } else {
        tokio::time::timeout(admission.wait, turns.acquire_owned()).await.ok().and_then(Result::ok)
    };
    match turn {
        Some(_turn) => next.run(request).await,
        None => error::overloaded().into_response(),
    }
}

/// The OpenAPI document: every route's operation, as the router serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = api_routes().into_openapi();
    api.merge(probe_routes().into_openapi());
    openapi::finish(&mut api);
    api
}

/// Liveness and readiness, kept outside admission control.
fn probe_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(ops::healthz)).routes(routes!(ops::readyz))
}

/// Every route but the probes, each registered from its handler's OpenAPI annotation.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(openapi::document))
        .routes(routes!(ui::index))
        .routes(routes!(ui::asset))
        .routes(routes!(ui::sign_in, ui::sign_out))
        .routes(routes!(ui::me))
        .routes(routes!(ops::metrics))
        .routes(routes!(events::post_events))
        .routes(routes!(lago::create))
        .routes(routes!(lago::batch))
        .routes(routes!(openmeter::ingest_events))
        .routes(routes!(openmeter::list_meters, openmeter::create_meter))
        .routes(routes!(openmeter::get_meter, openmeter::update_meter, openmeter::delete_meter))
        .routes(routes!(openmeter::query_get, openmeter::query_post))
        .routes(routes!(reports::user_reports))
        .routes(routes!(reports::rebuild))
        .routes(routes!(reports::runs))
        .routes(routes!(otlp::traces))
        .routes(routes!(usage::series))
        .routes(routes!(usage::spend))
        .routes(routes!(usage::organization_totals))
        .routes(routes!(usage::user_totals))
        .routes(routes!(llm::user_summary))
        .routes(routes!(llm::user_breakdown))
        .routes(routes!(llm::user_monthly))
        .routes(routes!(llm::user_requests))
        .routes(routes!(llm::activity))
        .routes(routes!(llm::prices))
        .routes(routes!(llm::put_price, llm::delete_price))
        .routes(routes!(llm::unpriced_models))
        .routes(routes!(llm::organization_summary))
        .routes(routes!(churn::churn))
        .routes(routes!(churn::risers))
        .routes(routes!(churn::runs))
        .routes(routes!(churn::user_churn))
        .routes(routes!(alerts::alerts))
        .routes(routes!(alerts::resolve))
        .routes(routes!(alerts::list_rules, alerts::create_rule))
        .routes(routes!(alerts::read_rule, alerts::replace_rule, alerts::delete_rule))
        .routes(routes!(alerts::list_channels, alerts::create_channel))
        .routes(routes!(alerts::read_channel, alerts::delete_channel))
        .routes(routes!(alerts::deliveries))
        .routes(routes!(alerts::entitlements))
        .routes(routes!(seats::post_audit_events, seats::list_audit_events))
        .routes(routes!(seats::organization_seats))
        .routes(routes!(seats::organization_ledger))
        .routes(routes!(seats::organization_invoice))
        .routes(routes!(servers::list, servers::register))
        .routes(routes!(servers::read))
        .routes(routes!(servers::rotate_key))
        .routes(routes!(seats::server_seats))
        .routes(routes!(seats::server_ledger))
        .routes(routes!(seats::server_invoice))
        .routes(routes!(servers::push))
        .routes(routes!(servers::status))
        .routes(routes!(seats::run_ledger))
        .merge(resources::routes::<Organization>("/v1/organizations"))
        .merge(resources::routes::<Team>("/v1/teams"))
        .merge(resources::routes::<User>("/v1/users"))
        .merge(resources::routes::<Plan>("/v1/plans"))
        .merge(resources::routes::<Subscription>("/v1/subscriptions"))
        .merge(resources::routes::<UsageType>("/v1/usage-types"))
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(listener: TcpListener, app: AppState, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router(app)).with_graceful_shutdown(shutdown).await
}
