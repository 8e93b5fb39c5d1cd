//! The metrics listener's handlers (`DZDESK_METRICS_LISTEN`; see
//! `startup::serve_metrics`).

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{web, HttpResponse};
use chrono::Utc;

use crate::metrics::{self, Metrics};

/// `GET /metrics`: the Prometheus text exposition.
pub async fn scrape(metrics: web::Data<Metrics>) -> HttpResponse {
    match metrics.render(Utc::now().naive_utc()) {
        Ok(text) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, metrics::CONTENT_TYPE))
            .insert_header((CACHE_CONTROL, "no-store"))
            .body(text),
        Err(e) => {
            log::error!("rendering metrics: {e}");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// Anything else on the metrics listener.
pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
        .body("only /metrics is served here\n")
}
