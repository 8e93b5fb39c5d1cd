//! Settings > API (`/settings/api`): a signed-in user's API keys (generate,
//! list, revoke) and the account's IP allowlist, as browser pages. The work
//! itself is `crate::api::{keys, allowlist}`, as under `/v1/`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use askama::Template;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::api::allowlist;
use crate::api::field_error;
use crate::api::keys::{self, CreatedKey, KeyView, NewKey, MAX_EXPIRY_DAYS};
use crate::api::usage_log::{self, KeyUsage};
use crate::auth::csrf::CsrfBinding;
use crate::domain::IpAllowlist;
use crate::domain::{Role, Scope};
use crate::error::{ApiError, WebError};
use crate::routes::web::nav::{Nav, Section};
use crate::routes::web::session::{MaybeSignedIn, SignedIn};
use crate::routes::web::{render, see_other, FORM_LIMIT_BYTES};
use crate::state::AppState;

pub const CREATE_KEY_PURPOSE: &str = "api-key-create";
pub const REVOKE_KEY_PURPOSE: &str = "api-key-revoke";
pub const ALLOWLIST_PURPOSE: &str = "api-allowlist";
pub const ROTATE_KEY_PURPOSE: &str = "api-key-rotate";

/// The grace choices of the Rotate form: (`grace_hours`, label); 24 h is
/// the default.
const GRACE_CHOICES: [(i64, &str); 4] = [
    (0, "At once"),
    (1, "1 hour"),
    (24, "24 hours"),
    (168, "7 days"),
];

struct GraceOption {
    hours: i64,
    label: &'static str,
    selected: bool,
}

/// The expiry choices of the form: (`expires_in_days` value, label).
const EXPIRY_CHOICES: [(&str, &str); 4] = [
    ("", "No expiration"),
    ("30", "30 days"),
    ("90", "90 days"),
    ("365", "365 days"),
];

struct ScopeOption {
    scope: Scope,
    checked: bool,
}

struct ExpiryOption {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

struct KeyRowView {
    id: String,
    name: String,
    prefix: String,
    scopes: Vec<&'static str>,
    created: String,
    expires: String,
    expired: bool,
    last_used: String,
    /// Rotated: the old key works until `expires` (its grace period).
    replaced: bool,
}

/// Which form a validation error belongs to (it is shown next to it).
#[derive(Clone, Copy, PartialEq, Eq)]
enum FormKind {
    CreateKey,
    Allowlist,
}

/// What the user typed, shown again with the error.
struct Draft {
    name: String,
    scopes: Vec<Scope>,
    expires: String,
    entries_text: Option<String>,
    error: Option<(FormKind, String)>,
}

impl Draft {
    fn empty() -> Self {
        Self {
            name: String::new(),
            scopes: Vec::new(),
            expires: String::new(),
            entries_text: None,
            error: None,
        }
    }
}

#[derive(Template)]
#[template(path = "api_settings.html")]
struct SettingsPage<'a> {
    nav: Nav,
    /// "Standard: 60 requests per minute".
    plan: String,
    scope_options: Vec<ScopeOption>,
    expiry_options: Vec<ExpiryOption>,
    name: &'a str,
    keys: Vec<KeyRowView>,
    entries: Vec<String>,
    entries_text: String,
    create_token: &'a str,
    revoke_token: &'a str,
    rotate_token: &'a str,
    grace_options: Vec<GraceOption>,
    allowlist_token: &'a str,
    create_error: Option<&'a str>,
    allowlist_error: Option<&'a str>,
    revoked: bool,
    saved: bool,
}

#[derive(Template)]
#[template(path = "api_key_created.html")]
struct CreatedPage<'a> {
    nav: Nav,
    created: &'a CreatedKey,
    expires: String,
    /// After a rotation: until when the old key works.
    old_works_until: Option<String>,
}

#[derive(Deserialize)]
pub struct SettingsQuery {
    revoked: Option<String>,
    saved: Option<String>,
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    key_id: String,
    #[serde(default)]
    csrf_token: String,
}

#[derive(Deserialize)]
pub struct AllowlistForm {
    #[serde(default)]
    entries: String,
    #[serde(default)]
    csrf_token: String,
}

/// `2026-11-28T06:34:51Z` as `2026-11-28 06:34 UTC` (as other pages show
/// times); anything else as it is.
fn display_time(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_owned())
}

fn key_row(key: KeyView, now: DateTime<Utc>) -> KeyRowView {
    let expired = key
        .expires_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t <= now);
    KeyRowView {
        created: display_time(&key.created_at),
        expires: key
            .expires_at
            .as_deref()
            .map_or_else(|| "Never".to_owned(), display_time),
        expired,
        last_used: key
            .last_used_at
            .as_deref()
            .map_or_else(|| "Never".to_owned(), display_time),
        replaced: key.replaced_by.is_some(),
        id: key.id,
        name: key.name,
        prefix: key.prefix,
        scopes: key.scopes,
    }
}

/// The scopes a user of `role` may put on a key, in `Scope::API` order.
fn grantable(role: Role) -> impl Iterator<Item = Scope> {
    Scope::API.into_iter().filter(move |s| s.grantable_by(role))
}

/// `ApiError`s other than a validation message, as the page shows them.
fn web_error(e: ApiError) -> WebError {
    match e {
        ApiError::NotFound(_) => WebError::NotFound,
        ApiError::Forbidden(_)
        | ApiError::InsufficientScope { .. }
        | ApiError::NoCredential(_)
        | ApiError::Unauthorized(_) => WebError::Forbidden,
        ApiError::BadRequest(m)
        | ApiError::PayloadTooLarge(m)
        | ApiError::RateLimited(m)
        | ApiError::Conflict(m) => WebError::BadRequest(m),
        ApiError::RequestTimeout(_) => WebError::RequestTimeout,
        ApiError::Unavailable(e) => WebError::Unavailable(e),
        ApiError::Internal(e) => WebError::Internal(e),
    }
}

/// The settings page for `signed_in`, with `draft` (what was typed, and the
/// error it met) filled in.
async fn settings_page(
    state: &web::Data<AppState>,
    signed_in: &SignedIn,
    status: StatusCode,
    draft: Draft,
    revoked: bool,
    saved: bool,
) -> Result<HttpResponse, WebError> {
    let user_id = signed_in.user.id.clone();
    let st = state.clone();
    let keys = state
        .db
        .run(move |conn| keys::list(conn, &user_id, &st.usage))
        .await
        .map_err(web_error)?;
    let now = Utc::now();
    let entries = IpAllowlist::from_stored(&signed_in.user.ip_allowlist).entries();
    let session = CsrfBinding::Session(&signed_in.session_id);
    let create_token = state.csrf.token(session, CREATE_KEY_PURPOSE);
    let revoke_token = state.csrf.token(session, REVOKE_KEY_PURPOSE);
    let rotate_token = state.csrf.token(session, ROTATE_KEY_PURPOSE);
    let allowlist_token = state.csrf.token(session, ALLOWLIST_PURPOSE);
    let error_for = |kind: FormKind| {
        draft
            .error
            .as_ref()
            .filter(|(k, _)| *k == kind)
            .map(|(_, m)| m.as_str())
    };
    render(
        status,
        &SettingsPage {
            nav: Nav::new(state, signed_in, Section::ApiKeys),
            plan: signed_in
                .user
                .plan()
                .map_err(|e| WebError::internal(anyhow::anyhow!(e)))?
                .describe(),
            scope_options: grantable(signed_in.user.role())
                .map(|scope| ScopeOption {
                    scope,
                    checked: draft.scopes.contains(&scope),
                })
                .collect(),
            expiry_options: EXPIRY_CHOICES
                .iter()
                .map(|&(value, label)| ExpiryOption {
                    value,
                    label,
                    selected: value == draft.expires,
                })
                .collect(),
            name: &draft.name,
            keys: keys.into_iter().map(|k| key_row(k, now)).collect(),
            entries_text: draft
                .entries_text
                .clone()
                .unwrap_or_else(|| entries.join("\n")),
            entries,
            create_token: &create_token,
            revoke_token: &revoke_token,
            rotate_token: &rotate_token,
            grace_options: GRACE_CHOICES
                .iter()
                .map(|&(hours, label)| GraceOption {
                    hours,
                    label,
                    selected: hours == keys::Grace::DEFAULT_HOURS,
                })
                .collect(),
            allowlist_token: &allowlist_token,
            create_error: error_for(FormKind::CreateKey),
            allowlist_error: error_for(FormKind::Allowlist),
            revoked,
            saved,
        },
    )
}

/// `GET /settings/api`.
pub async fn settings_get(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    query: web::Query<SettingsQuery>,
) -> Result<HttpResponse, WebError> {
    let Some(signed_in) = signed_in.0 else {
        return Ok(see_other("/login?next=%2Fsettings%2Fapi"));
    };
    settings_page(
        &state,
        &signed_in,
        StatusCode::OK,
        Draft::empty(),
        query.revoked.is_some(),
        query.saved.is_some(),
    )
    .await
}

fn unreadable_form() -> WebError {
    WebError::BadRequest("The form could not be read. Go back and try again.".into())
}

/// An urlencoded form body as its (name, value) pairs, repeated names
/// included (`web::Form` cannot collect `scopes=a&scopes=b`). At most
/// [`FORM_LIMIT_BYTES`], like every other form.
async fn read_form_pairs(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<Vec<(String, String)>, WebError> {
    if !req
        .content_type()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        return Err(unreadable_form());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| unreadable_form())?;
        if body.len() + chunk.len() > FORM_LIMIT_BYTES {
            return Err(unreadable_form());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(url::form_urlencoded::parse(&body).into_owned().collect())
}

/// `expires_in_days` of the form: empty for none, else whole days.
fn parse_expiry(raw: &str) -> Result<Option<i64>, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<i64>()
        .ok()
        .filter(|d| (1..=MAX_EXPIRY_DAYS).contains(d))
        .map(Some)
        .ok_or_else(|| {
            field_error(
                "expires_in_days",
                &format!("must be a whole number of days from 1 to {MAX_EXPIRY_DAYS}"),
            )
        })
}

/// The key the form asks for, refusing scopes the user's role cannot grant.
fn new_key(name: &str, scopes: &[&str], expires: &str, role: Role) -> Result<NewKey, ApiError> {
    let name = keys::validate_name(name)?;
    let scopes = keys::parse_scope_list(scopes)?;
    let (_, denied) = scopes.split_by_role(role);
    if !denied.is_empty() {
        return Err(field_error(
            "scopes",
            &format!(
                "your role ({}) cannot grant {}",
                role.as_str(),
                denied
                    .iter()
                    .map(|s| format!("'{}'", s.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(NewKey {
        name,
        scopes,
        expires_in_days: parse_expiry(expires)?,
    })
}

/// `POST /settings/api/keys`: mints a key and shows it, this once.
pub async fn create_key(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, WebError> {
    let pairs = read_form_pairs(&req, payload).await?;
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let signed_in = signed_in.with_csrf(&state.csrf, CREATE_KEY_PURPOSE, field("csrf_token"))?;
    let scope_names: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "scopes")
        .map(|(_, v)| v.as_str())
        .collect();
    let role = signed_in.user.role();
    let validated = new_key(field("name"), &scope_names, field("expires_in_days"), role);
    let created = match validated {
        Ok(new) => {
            let user_id = signed_in.user.id.clone();
            state
                .db
                .run(move |conn| {
                    keys::create_for_user(conn, &user_id, &new, keys::MintedBy::Owner, Utc::now())
                })
                .await
        }
        Err(e) => Err(e),
    };
    let created = match created {
        Ok(created) => created,
        Err(ApiError::BadRequest(message)) => {
            let draft = Draft {
                name: field("name").to_owned(),
                scopes: scope_names.iter().filter_map(|s| Scope::parse(s)).collect(),
                expires: field("expires_in_days").to_owned(),
                entries_text: None,
                error: Some((FormKind::CreateKey, message)),
            };
            return settings_page(
                &state,
                &signed_in,
                StatusCode::BAD_REQUEST,
                draft,
                false,
                false,
            )
            .await;
        }
        Err(e) => return Err(web_error(e)),
    };
    log::info!(
        "user {} created API key {} in Settings > API",
        signed_in.user.id,
        created.id
    );
    render(
        StatusCode::OK,
        &CreatedPage {
            nav: Nav::new(&state, &signed_in, Section::ApiKeys),
            expires: created
                .expires_at
                .as_deref()
                .map_or_else(|| "Never".to_owned(), display_time),
            created: &created,
            old_works_until: None,
        },
    )
}

#[derive(Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    key_id: String,
    #[serde(default)]
    grace_hours: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /settings/api/keys/rotate`: replaces the key with a new one of
/// the same name, scopes and expiry, shown this once; the old key works
/// for the chosen grace period.
pub async fn rotate_key(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    form: web::Form<RotateForm>,
) -> Result<HttpResponse, WebError> {
    let signed_in = signed_in.with_csrf(&state.csrf, ROTATE_KEY_PURPOSE, &form.csrf_token)?;
    // A value that is no number gets the same message as one out of range.
    let grace = keys::Grace::hours(form.grace_hours.trim().parse::<i64>().unwrap_or(-1))
        .map_err(web_error)?;
    let user_id = signed_in.user.id.clone();
    let key_id = form.key_id.clone();
    let rotated = state
        .db
        .run(move |conn| {
            keys::rotate_key(
                conn,
                keys::Rotator::Owner(Some(&user_id)),
                &key_id,
                grace,
                Utc::now(),
            )
        })
        .await
        .map_err(web_error)?;
    state.credentials.fence().await;
    log::info!(
        "user {} rotated API key {} (now {}) in Settings > API",
        signed_in.user.id,
        rotated.old_id,
        rotated.new.id
    );
    render(
        StatusCode::OK,
        &CreatedPage {
            nav: Nav::new(&state, &signed_in, Section::ApiKeys),
            expires: rotated
                .new
                .expires_at
                .as_deref()
                .map_or_else(|| "Never".to_owned(), display_time),
            created: &rotated.new,
            old_works_until: Some(display_time(&rotated.old_works_until)),
        },
    )
}

#[derive(Template)]
#[template(path = "api_key_usage.html")]
struct UsagePage<'a> {
    nav: Nav,
    key_id: &'a str,
    usage: &'a KeyUsage,
    rows: Vec<UsageRowView>,
    chart: HourlyChart,
}

struct UsageRowView {
    at: String,
    method: String,
    path: String,
    status: i32,
    client_ip: String,
    duration_ms: i32,
    requests: i32,
}

/// `GET /settings/api/keys/{id}/usage`: the key's last 100 requests and
/// its requests per hour over the last 24 hours (inline SVG, no script).
pub async fn usage_get(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    path: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let key_id = path.into_inner();
    let Some(signed_in) = signed_in.0 else {
        return Ok(see_other("/login?next=%2Fsettings%2Fapi"));
    };
    let user_id = signed_in.user.id.clone();
    let id = key_id.clone();
    let now = Utc::now();
    let usage = state
        .db
        .run(move |conn| usage_log::recent(conn, &user_id, &id, now))
        .await
        .map_err(web_error)?;
    let rows = usage
        .recent
        .iter()
        .map(|u| UsageRowView {
            at: display_time_seconds(&u.at),
            method: u.method.clone(),
            path: u.path.clone(),
            status: u.status,
            client_ip: u.client_ip.clone().unwrap_or_else(|| "unknown".to_owned()),
            duration_ms: u.duration_ms,
            requests: u.requests,
        })
        .collect();
    let chart = HourlyChart::new(&usage.hourly, now);
    render(
        StatusCode::OK,
        &UsagePage {
            nav: Nav::new(&state, &signed_in, Section::ApiKeys),
            key_id: &key_id,
            usage: &usage,
            rows,
            chart,
        },
    )
}

/// `2026-11-28T06:34:51Z` as `2026-11-28 06:34:51 UTC`.
fn display_time_seconds(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_owned())
}

/// The geometry of the hourly bar chart (SVG user units).
struct HourlyChart {
    /// Requests in the 24 hours.
    total: u32,
    /// The tallest bar's count (the y scale's top).
    max: u32,
    bars: Vec<ChartBar>,
    /// Hour labels under every sixth bar.
    labels: Vec<ChartLabel>,
}

struct ChartBar {
    x: u32,
    y: u32,
    height: u32,
    count: u32,
    /// "10:00 UTC".
    hour: String,
}

struct ChartLabel {
    x: u32,
    text: String,
}

impl HourlyChart {
    /// Bars are this wide, with a gap of `GAP`; the plot is `PLOT_HEIGHT`
    /// tall above a baseline at `BASELINE`.
    const BAR: u32 = 20;
    const GAP: u32 = 4;
    const LEFT: u32 = 36;
    const PLOT_HEIGHT: u32 = 120;
    const BASELINE: u32 = 140;

    fn new(counts: &[u32; 24], now: DateTime<Utc>) -> Self {
        let max = counts.iter().copied().max().unwrap_or(0);
        let start = usage_log::chart_start(now);
        let bars = counts
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let height = if max == 0 {
                    0
                } else {
                    // At least one unit tall when not zero, so it shows.
                    ((u64::from(count) * u64::from(Self::PLOT_HEIGHT)) / u64::from(max))
                        .max(u64::from(count > 0)) as u32
                };
                ChartBar {
                    x: Self::LEFT + i as u32 * (Self::BAR + Self::GAP),
                    y: Self::BASELINE - height,
                    height,
                    count,
                    hour: (start + chrono::Duration::hours(i as i64))
                        .format("%H:00 UTC")
                        .to_string(),
                }
            })
            .collect::<Vec<_>>();
        let labels = bars
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 6 == 0 || *i == 23)
            .map(|(_, b)| ChartLabel {
                x: b.x + Self::BAR / 2,
                text: b.hour.trim_end_matches(" UTC").to_owned(),
            })
            .collect();
        Self {
            total: counts.iter().fold(0u32, |a, c| a.saturating_add(*c)),
            max,
            bars,
            labels,
        }
    }
}

/// `POST /settings/api/keys/revoke`.
pub async fn revoke_key(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    form: web::Form<RevokeForm>,
) -> Result<HttpResponse, WebError> {
    let signed_in = signed_in.with_csrf(&state.csrf, REVOKE_KEY_PURPOSE, &form.csrf_token)?;
    let user_id = signed_in.user.id.clone();
    let key_id = form.key_id.clone();
    state
        .db
        .run(move |conn| keys::revoke(conn, &user_id, &key_id, Utc::now()))
        .await
        .map_err(web_error)?;
    state.credentials.fence().await;
    log::info!(
        "user {} revoked API key {} in Settings > API",
        signed_in.user.id,
        form.key_id
    );
    Ok(see_other("/settings/api?revoked=1"))
}

/// `POST /settings/api/allowlist`: replaces the whole list (one address or
/// CIDR per line, or comma-separated), or changes nothing.
pub async fn save_allowlist(
    state: web::Data<AppState>,
    signed_in: MaybeSignedIn,
    form: web::Form<AllowlistForm>,
) -> Result<HttpResponse, WebError> {
    let signed_in = signed_in.with_csrf(&state.csrf, ALLOWLIST_PURPOSE, &form.csrf_token)?;
    let entries: Vec<String> = form
        .entries
        .split(['\n', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    let user_id = signed_in.user.id.clone();
    let saved = state
        .db
        .run(move |conn| allowlist::replace_for_user(conn, &user_id, &entries, Utc::now()))
        .await;
    match saved {
        Ok(view) => {
            state.credentials.fence().await;
            log::info!(
                "user {} set an IP allowlist of {} entries in Settings > API",
                signed_in.user.id,
                view.entries.len()
            );
            Ok(see_other("/settings/api?saved=1"))
        }
        Err(ApiError::BadRequest(message)) => {
            let draft = Draft {
                entries_text: Some(form.entries.clone()),
                error: Some((FormKind::Allowlist, message)),
                ..Draft::empty()
            };
            settings_page(
                &state,
                &signed_in,
                StatusCode::BAD_REQUEST,
                draft,
                false,
                false,
            )
            .await
        }
        Err(e) => Err(web_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_scales_bars_to_the_busiest_hour_and_labels_every_sixth() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T10:20:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut counts = [0u32; 24];
        counts[0] = 1;
        counts[12] = 50;
        counts[23] = 100;
        let chart = HourlyChart::new(&counts, now);
        assert_eq!((chart.total, chart.max), (151, 100));
        assert_eq!(chart.bars.len(), 24);
        assert_eq!(chart.bars[23].height, HourlyChart::PLOT_HEIGHT);
        assert_eq!(chart.bars[12].height, HourlyChart::PLOT_HEIGHT / 2);
        assert_eq!(chart.bars[0].height, 1, "a non-zero hour always shows");
        assert_eq!(chart.bars[5].height, 0);
        assert!(chart
            .bars
            .iter()
            .all(|b| b.y + b.height == HourlyChart::BASELINE));
        assert_eq!(chart.bars[0].hour, "11:00 UTC");
        assert_eq!(chart.bars[23].hour, "10:00 UTC");
        let labels: Vec<&str> = chart.labels.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(labels, ["11:00", "17:00", "23:00", "05:00", "10:00"]);
        // The last bar ends inside the 620-unit view box.
        let last = chart.bars.last().unwrap();
        assert!(last.x + HourlyChart::BAR <= 620);

        let empty = HourlyChart::new(&[0; 24], now);
        assert!(empty.bars.iter().all(|b| b.height == 0));
    }
}
