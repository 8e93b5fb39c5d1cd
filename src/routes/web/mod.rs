//! Browser pages: askama views next to their handlers.

pub mod api_settings;
pub mod apps;
pub mod home;
pub mod login;
pub mod nav;
pub mod rp_logout;
pub mod session;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::web::{self, ServiceConfig};
use actix_web::HttpResponse;
use askama::Template;

use crate::error::WebError;

/// Largest form body accepted by browser pages.
pub const FORM_LIMIT_BYTES: usize = 16 * 1024;

/// Form and query errors answer with the HTML error page.
pub fn configure_extractors(cfg: &mut ServiceConfig) {
    cfg.app_data(
        web::FormConfig::default()
            .limit(FORM_LIMIT_BYTES)
            .error_handler(|_, _| {
                WebError::BadRequest("The form could not be read. Go back and try again.".into())
                    .into()
            }),
    )
    .app_data(web::QueryConfig::default().error_handler(|_, _| {
        WebError::BadRequest("The address has an invalid query string.".into()).into()
    }));
}

/// Renders a page. Pages carry per-session CSRF tokens: never cache them.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Result<HttpResponse, WebError> {
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page.render()?))
}

/// 303 See Other to a local path.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Any path no route serves, outside /v1.
pub async fn not_found() -> Result<HttpResponse, WebError> {
    Err(WebError::NotFound)
}
