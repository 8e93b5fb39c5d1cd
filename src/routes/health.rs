use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// Liveness: 200 while the process runs.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: 200 when the database answers within two seconds, else 503;
/// 503 at once when the service is stopping (it still serves meanwhile).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.stopping.load(std::sync::atomic::Ordering::Acquire) {
        return HttpResponse::ServiceUnavailable()
            .json(json!({"status": "stopping", "reason": "shutting down: draining requests"}));
    }
    if state.db.ping().await {
        if state.limiter.degraded() {
            // Still serving: each instance limits on its own meanwhile.
            return HttpResponse::Ok().json(json!({
                "status": "degraded",
                "reason": "rate-limit store (Redis) unreachable: limits are counted per instance"
            }));
        }
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": "database unreachable"}))
    }
}
