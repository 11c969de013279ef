//! The API's description, OpenAPI 3.1, generated from the handlers' annotations and the
//! schemas' types (utoipa), served at `/openapi.json`; and `/docs`, a page that renders it in
//! the browser with nothing fetched from elsewhere.

use axum::Json;
use axum::response::Html;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentq",
        description = "Runs LLM agents as durable background jobs: start a session, follow it \
            (poll, long-poll or events), cancel it, approve its tool calls. Every endpoint but \
            the operations ones needs `Authorization: Bearer <api key>`; a session of another \
            org answers 404, exactly like a missing one. Errors are \
            `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        routes::agents::run,
        routes::agents::list,
        routes::agents::get,
        routes::events::stream,
        routes::agents::cancel,
        routes::agents::approve,
        routes::webhooks::list,
        routes::tools::list,
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
    ),
    components(schemas(
        agentq_shared::schemas::AgentRunRequest,
        agentq_shared::schemas::AgentRunResponse,
        agentq_shared::schemas::AgentSession,
        agentq_shared::schemas::SessionEvent,
        agentq_shared::schemas::SessionList,
        agentq_shared::schemas::ApprovalRequest,
        agentq_shared::schemas::FailureCode,
        agentq_shared::schemas::WebhookEvent,
        agentq_shared::schemas::WebhookDeliveryList,
        crate::error::ErrorBody,
    )),
    modifiers(&Bearer),
    tags(
        (name = "sessions", description = "Agent sessions"),
        (name = "tools", description = "What agents can use"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
