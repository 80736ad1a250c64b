//! The API's error answer: `{"error": {"code", "message", "field"}}` with the
//! status docs/api.md asks for. Every failure of a request becomes one of these;
//! none of them is raised after anything changed.

use hyper::StatusCode;
use serde::Serialize;

use crate::ensemble::EnsembleError;
use crate::server::engine::EngineError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorBody)]
pub(crate) struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorDetail)]
pub(crate) struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    field: Option<&'a str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None }
    }

    pub fn bad(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, code, message: message.into(), field: Some(field.into()) }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn to_json(&self) -> String {
        let body = Body { error: Inner { code: self.code, message: &self.message, field: self.field.as_deref() } };
        serde_json::to_string(&body)
            .unwrap_or_else(|_| r#"{"error":{"code":"internal","message":"","field":null}}"#.into())
    }
}

impl From<EnsembleError> for ApiError {
    fn from(e: EnsembleError) -> Self {
        let status = match e {
            EnsembleError::UnknownResult { .. } => StatusCode::NOT_FOUND,
            EnsembleError::AlreadyScored { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError { status, code: e.code(), message: e.to_string(), field: e.field().map(str::to_owned) }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Ensemble(e) => e.into(),
            EngineError::NoModels => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string()),
            other => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: other.code(),
                field: other.field(),
                message: other.to_string(),
            },
        }
    }
}
