//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! types they take and give, and served at `/v1/openapi.json`. The router registers each route
//! from the same annotation (`utoipa_axum::routes!`), so the document and the routes cannot drift.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref};
use utoipa::{Modify, ToSchema};

/// An RFC 9457 problem: what went wrong, where, and what is allowed.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(title = "Problem")]
pub struct Problem {
    /// `urn:tally:problem:<kind>`, stable for each kind of failure.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What was wrong and where (the parameter, position or field).
    pub detail: String,
    /// The offending query parameter, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tally",
        description = "Self-hosted usage analytics and billing reporting. Every endpoint but the probes, \
                       the dashboard's files and sign-in takes `Authorization: Bearer <api key>`.",
        license(name = "Apache-2.0")
    ),
    components(schemas(Problem)),
    modifiers(&Conventions)
)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`: this document, generated once.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "ops", summary = "This API's OpenAPI 3.1 document", responses((status = 200, description = "The document", body = Object)))]
pub async fn document() -> impl axum::response::IntoResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json = DOCUMENT.get_or_init(|| super::openapi().to_pretty_json().expect("the OpenAPI document serializes"));
    ([(axum::http::header::CONTENT_TYPE, "application/json")], json.as_str())
}

/// What every operation shares: the bearer key, and the problem answers it may give.
struct Conventions;

/// Paths that take no key.
const PUBLIC: [&str; 7] = ["/", "/ui/{file}", "/ui/session", "/healthz", "/readyz", "/metrics", "/v1/openapi.json"];

impl Modify for Conventions {
    fn modify(&self, api: &mut OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("A Tally API key")).build()),
        );
    }
}

/// Adds the security requirement and the problem answers to every operation; run once all
/// routes are in the document.
pub fn finish(api: &mut OpenApi) {
    for (path, item) in api.paths.paths.iter_mut() {
        let public = PUBLIC.contains(&path.as_str());
        for operation in operations(item) {
            if !public {
                operation.security = Some(vec![SecurityRequirement::new("api_key", Vec::<String>::new())]);
            }
            // Lago's clients expect Lago's own error bodies; everything else answers RFC 9457.
            let (media, schema) = if path.starts_with("/compat/lago/") {
                ("application/json", utoipa::openapi::RefOr::T(utoipa::openapi::schema::ObjectBuilder::new().into()))
            } else {
                ("application/problem+json", utoipa::openapi::RefOr::Ref(Ref::from_schema_name("Problem")))
            };
            for (status, why) in problems(operation, public) {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| ResponseBuilder::new().description(why).content(media, Content::new(Some(schema.clone()))).into());
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head].into_iter().flatten()
}

/// The failures an operation can answer with, from its shape.
fn problems(operation: &Operation, public: bool) -> Vec<(&'static str, &'static str)> {
    let has_body = operation.request_body.is_some();
    let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let mut answers = vec![
        ("500", "An unexpected failure, logged with the id the detail quotes"),
        ("503", "Overloaded or the database is unavailable; retry after `Retry-After` seconds"),
    ];
    if !public {
        answers.push(("401", "No API key, or an unknown or revoked one"));
        answers.push(("403", "The key's scope does not allow this"));
        answers.push(("429", "This key's rate limit is reached; retry after `Retry-After` seconds"));
        // Ids come in paths, query strings and bodies: any of them may name nothing readable.
        answers.push(("404", "Something named (in the path, a parameter or the body) does not exist or is not readable with this key"));
    }
    if !public || has_body || has_params {
        answers.push(("400", "A parameter, header or the body is invalid; the detail says which and why"));
    }
    if has_body {
        answers.push(("409", "Conflicts with what is stored"));
        answers.push(("413", "The body is too large"));
        answers.push(("415", "The body's media type is not accepted"));
        answers.push(("422", "The body is well-formed but its content is refused"));
        answers.push(("507", "The database is out of space; nothing was stored"));
    }
    answers
}

/// The operations of a resource's generic routes (`resources::routes`): list and create on
/// `many`, read, replace and merge-patch on `one`.
pub fn add_resource<R: ToSchema>(api: &mut OpenApi, many: &str, one: &str, noun: &str) {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    use utoipa::openapi::{RefOr, Required};

    let name = R::name();
    let item = || RefOr::Ref(Ref::from_schema_name(name.clone()));
    let json = |schema: RefOr<utoipa::openapi::schema::Schema>| Content::new(Some(schema));
    let query = |name: &str, description: &str, kind: Type| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(description))
            .schema(Some(ObjectBuilder::new().schema_type(kind)))
            .build()
    };
    let id = ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(format!("The {noun}'s id")))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    let body = |description: String, schema| {
        RequestBodyBuilder::new()
            .description(Some(description))
            .content("application/json", json(schema))
            .required(Some(Required::True))
            .build()
    };
    let tag = "entities";
    let page = ObjectBuilder::new()
        .property("count", ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
        .required("count")
        .property("results", ArrayBuilder::new().items(item()))
        .required("results");
    let responses = |status: &str, why: String, schema: RefOr<utoipa::openapi::schema::Schema>| {
        utoipa::openapi::ResponsesBuilder::new()
            .response(status, ResponseBuilder::new().description(why).content("application/json", json(schema)))
            .build()
    };

    let list = OperationBuilder::new()
        .tag(tag)
        .summary(Some(format!("List {noun}s")))
        .operation_id(Some(format!("list_{}", noun.replace(' ', "_"))))
        .parameter(query("limit", "Page size, 1 to 1000 (default 100)", Type::Integer))
        .parameter(query("offset", "Rows to skip", Type::Integer))
        .parameter(query("organization_id", "Only this organization's (admin keys)", Type::String))
        .responses(responses("200", format!("A page of {noun}s"), page.into()));
    let create = OperationBuilder::new()
        .tag(tag)
        .summary(Some(format!("Create a {noun} (409 if it exists)")))
        .operation_id(Some(format!("create_{}", noun.replace(' ', "_"))))
        .request_body(Some(body(format!("The new {noun}"), item())))
        .responses(responses("201", format!("The {noun}"), item()));
    let read = OperationBuilder::new()
        .tag(tag)
        .summary(Some(format!("Read a {noun}")))
        .operation_id(Some(format!("read_{}", noun.replace(' ', "_"))))
        .parameter(id.clone())
        .responses(responses("200", format!("The {noun}"), item()));
    let put = OperationBuilder::new()
        .tag(tag)
        .summary(Some(format!("Create or replace a {noun}")))
        .operation_id(Some(format!("put_{}", noun.replace(' ', "_"))))
        .parameter(id.clone())
        .request_body(Some(body(format!("The whole {noun}; its id must match the path's"), item())))
        .responses(responses("200", format!("The {noun}"), item()));
    let patch = OperationBuilder::new()
        .tag(tag)
        .summary(Some(format!("Change a {noun} with a JSON merge patch (RFC 7396)")))
        .operation_id(Some(format!("patch_{}", noun.replace(' ', "_"))))
        .parameter(id)
        .request_body(Some(
            RequestBodyBuilder::new()
                .description(Some("Members to change; `null` removes"))
                .content("application/merge-patch+json", json(ObjectBuilder::new().into()))
                .content("application/json", json(ObjectBuilder::new().into()))
                .required(Some(Required::True))
                .build(),
        ))
        .responses(responses("200", format!("The changed {noun}"), item()));

    api.paths.add_path_operation(many, vec![HttpMethod::Get], list);
    api.paths.add_path_operation(many, vec![HttpMethod::Post], create);
    api.paths.add_path_operation(one, vec![HttpMethod::Get], read);
    api.paths.add_path_operation(one, vec![HttpMethod::Put], put);
    api.paths.add_path_operation(one, vec![HttpMethod::Patch], patch);
    let components = api.components.get_or_insert_with(Default::default);
    let mut schemas = vec![(name.to_string(), R::schema())];
    R::schemas(&mut schemas);
    components.schemas.extend(schemas);
}
