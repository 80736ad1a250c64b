//! `GET /openapi.json`: the API described in OpenAPI 3.1, built from the
//! route table itself (`routes::ROUTES`) and from the request and response
//! types' `utoipa::ToSchema` derives, so the description cannot list a route
//! the server does not serve or miss one it does, and a field added to a body
//! type shows up in it. Which body each route takes and answers is written
//! once, in `operation` below: a `match` over every route, so a new route
//! does not compile until it is described.

use std::borrow::Cow;
use std::sync::OnceLock;

use hyper::Method;
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr, Required,
    ResponseBuilder,
};
use utoipa::ToSchema;

use super::engine::Decision;
use super::error::Body as ErrorBody;
use super::live::{LiveStatus as LiveStatusBody, Record};
use super::routes::{
    EnableBody, LayoutBody, Liveness, LoadBody, ModelsBody, OutcomeBody, OutcomeRecorded, PerformanceBody, PredictBody,
    Readiness, Route, StrategyBody, TrainingStartBody, WeightBody, ROUTES,
};
use super::training::JobStatus;
use crate::ensemble::EnsembleStatus;
use crate::server::engine::ModelEntry;

/// The document as JSON, built on first use (it never changes while the
/// process runs).
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    // Serializing a built document cannot fail short of a bug; the answer
    // stays JSON either way (the message escaped, not pasted in).
    JSON.get_or_init(|| {
        document().to_json().unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
    })
}

/// What a route takes or answers.
enum Payload {
    /// JSON of a schema in the components.
    Json(Cow<'static, str>),
    /// A JSON array of a schema in the components.
    JsonArray(Cow<'static, str>),
    /// Another media type, described in words.
    Other(&'static str, &'static str),
}

fn of<T: ToSchema>() -> Payload {
    Payload::Json(T::name())
}

struct RouteDoc {
    summary: &'static str,
    request: Option<Payload>,
    /// The success status and its body.
    response: (&'static str, Payload),
}

fn doc(summary: &'static str, request: Option<Payload>, status: &'static str, response: Payload) -> RouteDoc {
    RouteDoc { summary, request, response: (status, response) }
}

/// Each route's bodies: the one place they are written (docs/api.md tells the rest).
fn operation(route: Route) -> RouteDoc {
    use Route::*;
    match route {
        Status => doc("The consensus's status: strategy, models, the last result", None, "200", of::<EnsembleStatus>()),
        Models => doc("Every model: loaded or not, its weights file and version, its consensus settings, the repository's versions", None, "200", of::<ModelsBody>()),
        Enable => doc("Enable or disable a model in the consensus", Some(of::<EnableBody>()), "200", of::<ModelEntry>()),
        Weight => doc("Set a model's consensus weight", Some(of::<WeightBody>()), "200", of::<ModelEntry>()),
        Load => doc("Load a model's weights: a version of the model repository, or a file inside the weights folder", Some(of::<LoadBody>()), "200", of::<ModelEntry>()),
        Strategy => doc("Set the consensus strategy", Some(of::<StrategyBody>()), "200", of::<EnsembleStatus>()),
        TrainStart => doc("Start a training job (one at a time)", Some(of::<TrainingStartBody>()), "202", of::<JobStatus>()),
        TrainStatus => doc("The training job's progress and result", None, "200", of::<JobStatus>()),
        TrainStop => doc("Ask the running training job to stop (it saves a checkpoint)", None, "202", of::<JobStatus>()),
        Performance => doc("Report a model's measured accuracy and profit factor", Some(of::<PerformanceBody>()), "200", of::<ModelEntry>()),
        Predict => doc(
            "One decision: the models' predictions given, or the models run on the inputs given (JSON, or the binary layout of /api/ensemble/predict/layout as application/octet-stream)",
            Some(of::<PredictBody>()),
            "200",
            of::<Decision>(),
        ),
        Outcome => doc("Score a past decision against what the market did", Some(of::<OutcomeBody>()), "200", of::<OutcomeRecorded>()),
        Layout => doc("The input shapes predict takes, and the binary body's layout", None, "200", of::<LayoutBody>()),
        LiveLatest => doc("Live mode's latest decision", None, "200", of::<Record>()),
        LiveHistory => doc("Live mode's recent decisions, oldest first (query: limit)", None, "200", Payload::JsonArray(Record::name())),
        LiveStream => doc("Live mode's decisions as server-sent events", None, "200", Payload::Other("text/event-stream", "one `decision` event per decision, its data a live record")),
        LiveStatus => doc("Live mode's symbol, windows and counters", None, "200", of::<LiveStatusBody>()),
        HealthLive => doc("Liveness: the process answers", None, "200", of::<Liveness>()),
        HealthReady => doc("Readiness: a model is loaded and live mode (when on) is warm; 503 with the same body otherwise", None, "200", of::<Readiness>()),
        Metrics => doc("Prometheus metrics", None, "200", Payload::Other("text/plain", "the Prometheus text format, version 0.0.4")),
        OpenApi => doc("This description", None, "200", Payload::Other("application/json", "an OpenAPI 3.1 document")),
    }
}

/// Every schema a route names, with the schemas they name in turn.
fn schemas() -> Vec<(String, RefOr<Schema>)> {
    fn add<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) {
        out.push((T::name().into_owned(), T::schema()));
        T::schemas(out);
    }
    let mut out = Vec::new();
    add::<EnsembleStatus>(&mut out);
    add::<ModelsBody>(&mut out);
    add::<ModelEntry>(&mut out);
    add::<EnableBody>(&mut out);
    add::<WeightBody>(&mut out);
    add::<LoadBody>(&mut out);
    add::<StrategyBody>(&mut out);
    add::<TrainingStartBody>(&mut out);
    add::<JobStatus>(&mut out);
    add::<PerformanceBody>(&mut out);
    add::<PredictBody>(&mut out);
    add::<Decision>(&mut out);
    add::<OutcomeBody>(&mut out);
    add::<OutcomeRecorded>(&mut out);
    add::<LayoutBody>(&mut out);
    add::<Record>(&mut out);
    add::<LiveStatusBody>(&mut out);
    add::<Liveness>(&mut out);
    add::<Readiness>(&mut out);
    add::<ErrorBody>(&mut out);
    out
}

fn content(p: &Payload) -> (&'static str, utoipa::openapi::Content) {
    match p {
        Payload::Json(name) => {
            ("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(name.clone()))).build())
        }
        Payload::JsonArray(name) => (
            "application/json",
            ContentBuilder::new().schema(Some(ArrayBuilder::new().items(Ref::from_schema_name(name.clone())))).build(),
        ),
        Payload::Other(media, what) => (media, ContentBuilder::new().description(Some(*what)).build()),
    }
}

fn http_method(m: &Method) -> HttpMethod {
    match *m {
        Method::POST => HttpMethod::Post,
        _ => HttpMethod::Get,
    }
}

pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    let (_, error) = content(&of::<ErrorBody>());
    for (route, method, path) in ROUTES.iter() {
        let d = operation(*route);
        let (status, body) = &d.response;
        let (media, success) = content(body);
        let mut op = OperationBuilder::new()
            .summary(Some(d.summary))
            .response(*status, ResponseBuilder::new().description(d.summary).content(media, success).build())
            .response(
                "default",
                ResponseBuilder::new()
                    .description("An error naming the problem (and the field)")
                    .content("application/json", error.clone())
                    .build(),
            );
        if let Some(req) = &d.request {
            let (media, c) = content(req);
            let mut body = RequestBodyBuilder::new().required(Some(Required::True)).content(media, c);
            if *route == Route::Predict {
                let binary = ContentBuilder::new()
                    .description(Some(
                        "little-endian f32: features, then lob, then aux (GET /api/ensemble/predict/layout)",
                    ))
                    .build();
                body = body.content("application/octet-stream", binary);
            }
            op = op.request_body(Some(body.build()));
        }
        if *route == Route::LiveHistory {
            let limit = ParameterBuilder::new()
                .name("limit")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some("how many decisions, at most (default 100)"))
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))));
            op = op.parameter(limit);
        }
        if matches!(route, Route::LiveLatest | Route::LiveHistory | Route::LiveStatus | Route::LiveStream) {
            let symbol = ParameterBuilder::new()
                .name("symbol")
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some("which followed symbol (any case); required when live mode follows several"))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)));
            op = op.parameter(symbol);
        }
        paths.add_path_operation(path, vec![http_method(method)], op);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("quorum")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("The ensemble server's HTTP API (docs/api.md)")),
        )
        .paths(paths)
        .components(Some(ComponentsBuilder::new().schemas_from_iter(schemas()).build()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_route_is_described_under_its_method_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let mut described = 0;
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                let served = ROUTES.iter().any(|(_, m, p)| p == path && m.as_str().eq_ignore_ascii_case(method));
                assert!(served, "{method} {path} is described but not served");
                described += 1;
            }
        }
        assert_eq!(described, ROUTES.len());
    }

    #[test]
    fn every_schema_named_is_in_the_components() {
        let text = json();
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let components = doc["components"]["schemas"].as_object().unwrap();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 20, "{refs:?}");
        for r in refs {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
            assert!(components.contains_key(name), "{r} is named but not defined");
        }
        // A field of a body type is in its schema: the derive read the type.
        let load = &components["LoadBody"]["properties"];
        assert!(load["version"].is_object() && load["path"].is_object() && load["model_type"].is_object(), "{load}");
    }

    fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        ("$ref", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => collect_refs(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
            _ => {}
        }
    }
}
