//! Proving ownership of an email address or phone number: the
//! `requestToken` endpoints, the link/code that validates, and
//! `POST /account/3pid/add`.
//!
//! Gatehouse validates 3PIDs itself (no identity server): it sends a link
//! by email or a code by SMS; opening the link (or submitting the code to
//! `submit_url`) marks the validation session done, which the
//! `m.login.email.identity` / `m.login.msisdn` stages then accept.

use std::net::IpAddr;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use gatehouse_core::ErrorKind;
use gatehouse_core::identifier::{Medium, Threepid, canonical_email, phone_to_msisdn};
use gatehouse_core::token;
use gatehouse_store::{ClientSecretHash, StoreError, ThreepidValidation};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, MatrixJson, RawJson, Requester, typed};
use crate::ratelimit::Reservation;
use crate::state::AppState;
use crate::uia::{self, Sensitive};

/// What a validation is for; decides whether the 3PID must be bound or free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Register,
    PasswordReset,
    AddThreepid,
    /// A signed-in user proves it is them with an address of theirs (the
    /// fallback page of a UIA email/msisdn stage for a sensitive action).
    Confirm,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::PasswordReset => "password_reset",
            Self::AddThreepid => "add_threepid",
            Self::Confirm => "confirm",
        }
    }
}

#[derive(Deserialize)]
pub struct EmailTokenBody {
    client_secret: Option<String>,
    email: Option<String>,
    send_attempt: Option<u64>,
    next_link: Option<String>,
}

impl EmailTokenBody {
    /// A first attempt made by Gatehouse itself (the account page).
    pub fn first(client_secret: String, email: String, next_link: Option<String>) -> Self {
        Self {
            client_secret: Some(client_secret),
            email: Some(email),
            send_attempt: Some(1),
            next_link,
        }
    }
}

#[derive(Deserialize)]
pub struct MsisdnTokenBody {
    client_secret: Option<String>,
    country: Option<String>,
    phone_number: Option<String>,
    send_attempt: Option<u64>,
}

/// A `next_link` the emailed link may redirect to: an absolute http(s) URL
/// on this server's own origin (`public_baseurl`'s scheme, host and port)
/// or on a host of `email.next_link_domains`. Anything else is refused
/// rather than dropped, so the client learns at once that its redirect
/// will not happen. Without the origin check, anyone could have the server
/// mail a link that, once validated, sends the reader to a site of the
/// sender's choosing: an open redirect behind a trusted sender.
fn check_next_link(state: &AppState, link: Option<String>) -> ApiResult<Option<String>> {
    let Some(link) = link else { return Ok(None) };
    let url = reqwest::Url::parse(&link)
        .map_err(|_| ApiError::invalid("next_link is not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::invalid("next_link must be an http or https URL"));
    }
    let own_origin = state
        .config
        .public_baseurl
        .as_deref()
        .and_then(|base| reqwest::Url::parse(base).ok())
        .is_some_and(|base| base.origin() == url.origin());
    let host = url.host_str().unwrap_or_default();
    let listed = state
        .config
        .email
        .next_link_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(host));
    if !own_origin && !listed {
        return Err(ApiError::invalid(
            "next_link's host is not allowed on this server",
        ));
    }
    Ok(Some(url.into()))
}

fn check_client_secret(secret: Option<String>) -> ApiResult<String> {
    let secret = secret.ok_or_else(|| ApiError::missing("client_secret"))?;
    let ok = |b: u8| b.is_ascii_alphanumeric() || b".=_-".contains(&b);
    if secret.is_empty() || secret.len() > 255 || !secret.bytes().all(ok) {
        return Err(ApiError::invalid(
            "client_secret must be 1-255 characters of [0-9a-zA-Z.=_-]",
        ));
    }
    Ok(secret)
}

/// A bound 3PID must (reset) or must not (register, add) exist.
async fn check_binding(state: &AppState, purpose: Purpose, threepid: &Threepid) -> ApiResult<()> {
    let owner = state.store.user_by_threepid(threepid).await?;
    match (purpose, owner) {
        (Purpose::PasswordReset | Purpose::Confirm, None) => Err(ApiError::new(
            ErrorKind::ThreepidNotFound,
            "No account is bound to this address",
        )),
        (Purpose::Register | Purpose::AddThreepid, Some(_)) => Err(ApiError::new(
            ErrorKind::ThreepidInUse,
            "This address is already in use",
        )),
        _ => Ok(()),
    }
}

fn sending_failed(e: &crate::messenger::SendError) -> ApiError {
    tracing::error!(error = %e, "could not send a validation message");
    ApiError::new(
        ErrorKind::Unknown,
        "Could not send the validation message; try again later",
    )
    .with_body(Map::new(), 502)
}

fn random_id(len: usize) -> String {
    token::random_alphanumeric(len)
}

fn six_digits() -> String {
    token::random_digits(6)
}

/// The `requestToken` answer: `sid`, and `submit_url` (where a code is
/// POSTed), left out rather than `null` if there were no public address
/// (the configuration requires one when email or SMS is on).
fn token_response(state: &AppState, sid: &str) -> Value {
    let mut answer = json!({ "sid": sid });
    if let Some(base) = &state.config.public_baseurl {
        answer["submit_url"] = format!(
            "{}/_gatehouse/threepid/submit_token",
            base.trim_end_matches('/')
        )
        .into();
    }
    answer
}

/// Stores the validation (or finds the one this `send_attempt` already
/// made); `Some(secret)` when a new message must be sent. Only the client
/// secret's hash is stored (see [`ClientSecretHash`]).
async fn start_validation(
    state: &AppState,
    client_secret: &str,
    threepid: Threepid,
    send_attempt: u64,
    secret: String,
    lifetime_ms: u64,
    next_link: Option<String>,
) -> ApiResult<(ThreepidValidation, Option<String>)> {
    let now = state.clock.now_ms();
    let fresh = ThreepidValidation {
        sid: random_id(24),
        client_secret: ClientSecretHash::of(client_secret),
        threepid,
        token_hash: token::hash(&secret),
        send_attempt,
        validated_at: None,
        created_at: now,
        expires_at: now.saturating_add(lifetime_ms),
        next_link,
        failed_attempts: 0,
    };
    let stored = state.store.upsert_threepid_validation(&fresh).await?;
    let send = stored.token_hash == fresh.token_hash;
    Ok((stored, send.then_some(secret)))
}

pub async fn request_email_token(
    state: &AppState,
    purpose: Purpose,
    body: EmailTokenBody,
) -> ApiResult<Json<Value>> {
    if !state.config.email.enabled {
        return Err(ApiError::new(
            ErrorKind::ThreepidMediumNotSupported,
            "This server does not send email",
        ));
    }
    let client_secret = check_client_secret(body.client_secret)?;
    let email = canonical_email(&body.email.ok_or_else(|| ApiError::missing("email"))?)?;
    let send_attempt = body
        .send_attempt
        .ok_or_else(|| ApiError::missing("send_attempt"))?;
    let next_link = check_next_link(state, body.next_link)?;
    let threepid = Threepid {
        medium: Medium::Email,
        address: email.clone(),
    };
    let message_slot = reserve_threepid_message(state, &threepid)?;
    check_binding(state, purpose, &threepid).await?;
    let secret = random_id(32);
    let (validation, to_send) = start_validation(
        state,
        &client_secret,
        threepid,
        send_attempt,
        secret,
        state.config.email.token_lifetime_ms,
        next_link,
    )
    .await?;
    if let Some(secret) = to_send {
        let base = state
            .config
            .public_baseurl
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/');
        // The secret as this request gave it: the store has only its hash
        // (the same secret's, since that is what found the validation).
        let link = format!(
            "{base}/_gatehouse/threepid/validate?sid={}&client_secret={}&token={secret}",
            validation.sid,
            urlencode(&client_secret)
        );
        let expires = format_ms(validation.expires_at);
        state
            .messenger
            .send_validation_email(&email, purpose.as_str(), &link, &expires)
            .await
            .map_err(|e| sending_failed(&e))?;
        message_slot.keep();
        tracing::info!(sid = %validation.sid, purpose = purpose.as_str(), "validation email sent");
    }
    Ok(Json(token_response(state, &validation.sid)))
}

pub async fn request_msisdn_token(
    state: &AppState,
    purpose: Purpose,
    body: MsisdnTokenBody,
) -> ApiResult<Json<Value>> {
    if !state.config.sms.enabled {
        return Err(ApiError::new(
            ErrorKind::ThreepidMediumNotSupported,
            "This server does not send SMS",
        ));
    }
    let client_secret = check_client_secret(body.client_secret)?;
    let country = body.country.ok_or_else(|| ApiError::missing("country"))?;
    let phone = body
        .phone_number
        .ok_or_else(|| ApiError::missing("phone_number"))?;
    let msisdn = phone_to_msisdn(&country, &phone)?;
    let send_attempt = body
        .send_attempt
        .ok_or_else(|| ApiError::missing("send_attempt"))?;
    let threepid = Threepid {
        medium: Medium::Msisdn,
        address: msisdn.clone(),
    };
    let message_slot = reserve_threepid_message(state, &threepid)?;
    check_binding(state, purpose, &threepid).await?;
    let code = six_digits();
    let (validation, to_send) = start_validation(
        state,
        &client_secret,
        threepid,
        send_attempt,
        code,
        state.config.sms.token_lifetime_ms,
        // A code is typed into the client and POSTed to `submit_url`; the
        // spec ignores `next_link` there, so it is not kept.
        None,
    )
    .await?;
    if let Some(code) = to_send {
        state
            .messenger
            .send_sms(&msisdn, &code, &validation.sid)
            .await
            .map_err(|e| sending_failed(&e))?;
        message_slot.keep();
        tracing::info!(sid = %validation.sid, purpose = purpose.as_str(), "validation SMS sent");
    }
    let mut answer = token_response(state, &validation.sid);
    answer["msisdn"] = msisdn.as_str().into();
    answer["intl_fmt"] = format!("+{msisdn}").into();
    Ok(Json(answer))
}

pub(crate) fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e[1..].to_owned())
        .unwrap_or_default()
}

pub(crate) fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

macro_rules! request_token_route {
    ($name:ident, $body:ty, $handler:ident, $purpose:expr) => {
        pub async fn $name(
            State(state): State<AppState>,
            ClientIp(ip): ClientIp,
            MatrixJson(body): MatrixJson<$body>,
        ) -> ApiResult<Json<Value>> {
            check_address_limit(&state, ip)?;
            $handler(&state, $purpose, body).await
        }
    };
}

/// `rate_limits.threepid_validation` per client address, checked before
/// the body is read.
fn check_address_limit(state: &AppState, ip: IpAddr) -> ApiResult<()> {
    state
        .limits
        .threepid_requests_per_address
        .check(ip)
        .map_err(ApiError::limited)
}

/// `rate_limits.threepid_validation` per email address or phone number, so
/// that many clients together cannot flood one inbox or phone either. Only
/// messages sent count: a repeated `send_attempt` (which the spec tells
/// clients to use after a network error) or a refused request does not.
fn threepid_limit_key(threepid: &Threepid) -> String {
    format!("{}:{}", threepid.medium.as_str(), threepid.address)
}

/// Reserves one message to `threepid`; `keep` it once the message is sent.
fn reserve_threepid_message<'s>(
    state: &'s AppState,
    threepid: &Threepid,
) -> ApiResult<Reservation<'s, String>> {
    state
        .limits
        .threepid_requests_per_threepid
        .reserve(threepid_limit_key(threepid))
        .map_err(ApiError::limited)
}

request_token_route!(
    register_email,
    EmailTokenBody,
    request_email_token,
    Purpose::Register
);
request_token_route!(
    register_msisdn,
    MsisdnTokenBody,
    request_msisdn_token,
    Purpose::Register
);
request_token_route!(
    reset_email,
    EmailTokenBody,
    request_email_token,
    Purpose::PasswordReset
);
request_token_route!(
    reset_msisdn,
    MsisdnTokenBody,
    request_msisdn_token,
    Purpose::PasswordReset
);
request_token_route!(
    add_email,
    EmailTokenBody,
    request_email_token,
    Purpose::AddThreepid
);
request_token_route!(
    add_msisdn,
    MsisdnTokenBody,
    request_msisdn_token,
    Purpose::AddThreepid
);

#[derive(Deserialize)]
pub struct SubmitToken {
    sid: Option<String>,
    client_secret: Option<String>,
    token: Option<String>,
}

/// Wrong secrets a validation survives: a 6-digit SMS code must not be
/// guessable by trying them all. A new `send_attempt` starts afresh, and
/// `requestToken` itself is rate limited per address and per number.
const MAX_FAILED_ATTEMPTS: u32 = 5;

/// Checks a presented secret against a validation and marks it done:
/// `Some(next_link)` when it validated, `None` when the secret is wrong.
async fn validate(state: &AppState, q: SubmitToken) -> ApiResult<Option<Option<String>>> {
    let (Some(sid), Some(secret), Some(tok)) = (q.sid, q.client_secret, q.token) else {
        return Err(ApiError::missing("sid, client_secret and token"));
    };
    let redeemed = state
        .store
        .redeem_threepid_secret(
            &sid,
            &ClientSecretHash::of(&secret),
            &token::hash(tok.trim()),
            state.clock.now_ms(),
            MAX_FAILED_ATTEMPTS,
        )
        .await?;
    if redeemed.is_none() {
        tracing::info!(sid = %sid, "3PID validation secret refused");
    }
    Ok(redeemed.map(|v| v.next_link))
}

/// `GET /_gatehouse/threepid/validate`: the link in the email.
pub async fn validate_link(
    State(state): State<AppState>,
    query: Result<Query<SubmitToken>, QueryRejection>,
) -> Response {
    // A link mangled on its way (a mail client cutting it, a duplicated
    // parameter) gets the page a person can read, not a text/plain 400.
    let outcome = match query {
        Ok(Query(q)) => validate(&state, q).await,
        Err(_) => Ok(None),
    };
    let (ok, status, next_link) = match outcome {
        Ok(Some(next_link)) => (true, StatusCode::OK, next_link),
        Ok(None) => (false, StatusCode::BAD_REQUEST, None),
        Err(e) => (
            false,
            StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::BAD_REQUEST),
            None,
        ),
    };
    if ok && let Some(next) = next_link {
        return Redirect::to(&next).into_response();
    }
    if ok {
        crate::fallback::message_page(
            &state,
            "Address confirmed",
            "Your address is confirmed. You can return to your application.",
            true,
            status,
        )
    } else {
        crate::fallback::message_page(
            &state,
            "Link not valid",
            "This link is wrong, expired or already replaced by a newer one.",
            false,
            status,
        )
    }
}

/// `POST /_gatehouse/threepid/submit_token`: the `submit_url` for codes.
pub async fn submit_token(
    State(state): State<AppState>,
    MatrixJson(q): MatrixJson<SubmitToken>,
) -> ApiResult<Json<Value>> {
    let success = validate(&state, q).await?.is_some();
    Ok(Json(json!({ "success": success })))
}

#[derive(Deserialize)]
struct AddThreepidBody {
    client_secret: Option<String>,
    sid: Option<String>,
}

/// `POST /account/3pid/add`: bind a validated 3PID, under UIA.
pub async fn add(
    State(state): State<AppState>,
    requester: Requester,
    method: Method,
    uri: Uri,
    RawJson(raw): RawJson,
) -> ApiResult<Json<Value>> {
    let body: AddThreepidBody = typed(&raw)?;
    let secret = body
        .client_secret
        .ok_or_else(|| ApiError::missing("client_secret"))?;
    let sid = body.sid.ok_or_else(|| ApiError::missing("sid"))?;
    let authorised = uia::reauthenticate(
        &state,
        &requester,
        Sensitive::ThreepidChange,
        &method,
        &uri,
        &raw,
    )
    .await?;
    // Asked before the link was clicked, the session is not spent: the
    // client retries the same request once the address is validated.
    authorised
        .spend_on(&state, bind_validated(&state, &requester, &sid, &secret))
        .await
}

async fn bind_validated(
    state: &AppState,
    requester: &Requester,
    sid: &str,
    secret: &str,
) -> ApiResult<Json<Value>> {
    let now = state.clock.now_ms();
    let validation = state.store.threepid_validation(sid).await?;
    let Some(v) = validation.filter(|v| {
        v.client_secret.matches(secret) && v.validated_at.is_some() && v.expires_at > now
    }) else {
        return Err(ApiError::new(
            ErrorKind::ThreepidAuthFailed,
            "This third-party ID has not been validated",
        ));
    };
    let added = crate::homeserver::changing(state, &requester.user_id, Default::default(), async {
        Ok(state
            .store
            .add_threepid(&requester.user_id, &v.threepid, now)
            .await)
    })
    .await?;
    match added {
        Ok(()) => Ok(Json(json!({}))),
        Err(StoreError::ThreepidInUse) => Err(ApiError::new(
            ErrorKind::ThreepidInUse,
            "This address is already in use",
        )),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_format() {
        assert_eq!(super::format_ms(0), "1970-01-01 00:00");
        assert_eq!(super::format_ms(1_795_000_000_000), "2026-11-18 11:06");
    }
}
