//! `GET /login` (the flows that work) and `POST /login` (`m.login.password`
//! with every identifier type, including the deprecated top-level forms).

use axum::Json;
use axum::extract::State;
use gatehouse_core::ErrorKind;
use gatehouse_core::identifier::Identifier;
use gatehouse_core::token;
use gatehouse_core::user_id::UserId;
use gatehouse_store::NewSession;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, MatrixJson};
use crate::issue;
use crate::metrics::LoginOutcome;
use crate::password_auth::check_password;
use crate::state::AppState;

pub const PASSWORD: &str = "m.login.password";

pub const TOKEN: &str = "m.login.token";

pub async fn flows(State(state): State<AppState>) -> Json<Value> {
    let mut flows = vec![
        json!({ "type": PASSWORD }),
        json!({ "type": TOKEN, "get_login_token": true }),
    ];
    if !state.appservices.is_empty() {
        flows.push(json!({ "type": crate::appservice::LOGIN_TYPE }));
    }
    if state.config.sso.enabled() {
        flows.push(json!({
            "type": "m.login.sso",
            "identity_providers": crate::sso::advertised(&state.config.sso),
        }));
    }
    if !state.config.sso.cas.is_empty() {
        flows.push(json!({ "type": "m.login.cas" }));
    }
    Json(json!({ "flows": flows }))
}

/// A password from a request body: zeroised on drop, never printed.
#[derive(Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn take(self) -> Zeroizing<String> {
        self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `identifier` as sent: every field optional so that each absence gets
/// its own precise error.
#[derive(Debug, Deserialize, Default)]
pub struct IdentifierBody {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub user: Option<String>,
    pub medium: Option<String>,
    pub address: Option<String>,
    pub country: Option<String>,
    pub phone: Option<String>,
    /// The pre-spec name of `phone`, still sent by older clients.
    pub number: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginBody {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub identifier: Option<IdentifierBody>,
    /// Deprecated form of `m.id.user`.
    pub user: Option<String>,
    /// Deprecated form of `m.id.thirdparty`.
    pub medium: Option<String>,
    pub address: Option<String>,
    pub password: Option<Secret>,
    /// For `m.login.token`.
    pub token: Option<Secret>,
    pub device_id: Option<String>,
    pub initial_device_display_name: Option<String>,
    #[serde(default)]
    pub refresh_token: bool,
}

#[derive(Debug, Serialize)]
pub struct LoginResponse {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
    /// Deprecated but still sent: older clients read it.
    pub home_server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub well_known: Option<Value>,
}

fn required(value: Option<String>, name: &str) -> ApiResult<String> {
    value.ok_or_else(|| ApiError::missing(name))
}

/// Turns the identifier (or its deprecated top-level spellings) into one
/// [`Identifier`].
pub fn identifier_of(
    body: Option<IdentifierBody>,
    user: Option<String>,
    medium: Option<String>,
    address: Option<String>,
) -> ApiResult<Identifier> {
    let Some(id) = body else {
        return match (user, medium, address) {
            (Some(user), _, _) => Ok(Identifier::User { user }),
            (None, Some(medium), address) => Ok(Identifier::ThirdParty {
                medium,
                address: required(address, "address")?,
            }),
            (None, None, _) => Err(ApiError::missing("identifier")),
        };
    };
    // Clients that predate `type` send `{medium, address}` or `{user}` alone.
    let kind = match id.kind {
        Some(kind) => kind,
        None if id.medium.is_some() => "m.id.thirdparty".to_owned(),
        None if id.user.is_some() => "m.id.user".to_owned(),
        None => return Err(ApiError::missing("identifier.type")),
    };
    match kind.as_str() {
        "m.id.user" => Ok(Identifier::User {
            user: required(id.user, "identifier.user")?,
        }),
        "m.id.thirdparty" => Ok(Identifier::ThirdParty {
            medium: required(id.medium, "identifier.medium")?,
            address: required(id.address, "identifier.address")?,
        }),
        "m.id.phone" => Ok(Identifier::Phone {
            country: required(id.country, "identifier.country")?,
            phone: required(id.phone.or(id.number), "identifier.phone")?,
        }),
        other => Err(ApiError::new(
            ErrorKind::Unknown,
            format!("Unknown identifier type: {other}"),
        )),
    }
}

/// Checks a requested device ID: printable, not absurdly long.
/// "The given device ID must not be the same as a cross-signing key ID"
/// (both login types; a generated ID cannot be one).
async fn check_not_a_key_id(state: &AppState, user_id: &UserId, device_id: &str) -> ApiResult<()> {
    if let Some(keys) = state.store.cross_signing_keys(user_id).await?
        && super::keys::key_ids(&keys).iter().any(|k| k == device_id)
    {
        return Err(ApiError::forbidden(
            "device_id is the ID of a cross-signing key",
        ));
    }
    Ok(())
}

pub fn check_device_id(device_id: Option<String>) -> ApiResult<String> {
    match device_id {
        None => Ok(token::generate_device_id()),
        Some(d) if d.is_empty() || d.len() > 255 || d.chars().any(char::is_control) => Err(
            ApiError::invalid("device_id must be 1 to 255 printable characters"),
        ),
        Some(d) => Ok(d),
    }
}

/// `POST /login` as routed: [`login`], or `m.login.application_service`,
/// which the request's `as_token` authenticates.
pub async fn post_login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
    MatrixJson(body): MatrixJson<LoginBody>,
) -> ApiResult<Json<LoginResponse>> {
    if body.kind.as_deref() == Some(crate::appservice::LOGIN_TYPE) {
        return appservice_login(&state, &headers, body).await.map(Json);
    }
    login(State(state), ClientIp(ip), MatrixJson(body)).await
}

/// `m.login.application_service`: an appservice logs in as a registered
/// user of its namespaces. Not limited per address (as Synapse); per
/// account only when its registration says `rate_limited`.
async fn appservice_login(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    body: LoginBody,
) -> ApiResult<LoginResponse> {
    // The spec's answer to a missing or non-appservice token: M_FORBIDDEN.
    let service = crate::appservice::caller(state, headers)
        .ok_or_else(|| ApiError::forbidden("This login type needs an appservice token"))?;
    let identifier = identifier_of(body.identifier, body.user, body.medium, body.address)?;
    let Identifier::User { user } = identifier else {
        return Err(ApiError::new(
            ErrorKind::Unknown,
            "m.login.application_service takes an m.id.user identifier",
        ));
    };
    let not_registered = || ApiError::forbidden("This user has not been registered");
    let user_id = crate::appservice::parse_user_id(&user, &state.config.server_name)
        .ok_or_else(not_registered)?;
    if !service.is_interested_in(&user_id) {
        let mut e = ApiError::new(
            ErrorKind::Exclusive,
            "This user ID is outside the application service's namespaces",
        );
        e.status = Some(403);
        return Err(e);
    }
    let account = state
        .store
        .user(&user_id)
        .await?
        .ok_or_else(not_registered)?;
    if account.deactivated {
        return Err(ApiError::new(
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        ));
    }
    if account.locked {
        return Err(crate::extract::locked());
    }
    if service.rate_limited {
        state
            .limits
            .per_account
            .check(&user_id.to_string())
            .map_err(ApiError::limited)?;
    }
    let requested_device = body.device_id.is_some();
    let device_id = check_device_id(body.device_id)?;
    if requested_device {
        check_not_a_key_id(state, &user_id, &device_id).await?;
    }
    let response = start_session(
        state,
        user_id,
        device_id,
        body.initial_device_display_name,
        body.refresh_token,
    )
    .await?;
    state.metrics.login(LoginOutcome::Ok);
    Ok(response)
}

pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MatrixJson(body): MatrixJson<LoginBody>,
) -> ApiResult<Json<LoginResponse>> {
    check_address_limit(&state, ip)?;
    let kind = required(body.kind.clone(), "type")?;
    if kind == TOKEN {
        return token_login(&state, body).await.map(Json);
    }
    if kind != PASSWORD {
        return Err(ApiError::new(ErrorKind::Unknown, "Bad login type."));
    }
    let identifier = identifier_of(body.identifier, body.user, body.medium, body.address)?;
    let password = body
        .password
        .ok_or_else(|| ApiError::missing("password"))?
        .take();
    let requested_device = body.device_id.is_some();
    let device_id = check_device_id(body.device_id)?;
    let account = check_password(&state, &identifier, password, Some(ip)).await?;
    if requested_device {
        check_not_a_key_id(&state, &account.user_id, &device_id).await?;
    }
    let response = start_session(
        &state,
        account.user_id,
        device_id,
        body.initial_device_display_name,
        body.refresh_token,
    )
    .await?;
    state.metrics.login(LoginOutcome::Ok);
    Ok(Json(response))
}

/// Login attempts per client address (`rate_limits.login_per_address`).
pub fn check_address_limit(state: &AppState, ip: std::net::IpAddr) -> ApiResult<()> {
    state.limits.per_address.check(ip).map_err(|wait| {
        state.metrics.login(LoginOutcome::Limited);
        ApiError::limited(wait)
    })
}

/// `m.login.token`: a single-use token from `/login/get_token` names the user.
async fn token_login(state: &AppState, body: LoginBody) -> ApiResult<LoginResponse> {
    let presented = body.token.ok_or_else(|| ApiError::missing("token"))?.take();
    let requested_device = body.device_id.is_some();
    let device_id = check_device_id(body.device_id)?;
    let invalid = || ApiError::forbidden("Invalid or expired login token");
    if token::check(&presented, token::TokenKind::Login).is_err() {
        return Err(invalid());
    }
    let now = state.clock.now_ms();
    let hash = token::hash(&presented);
    // Checked before the token is spent: a refused device_id must not cost
    // the user their single-use token.
    let owner = state
        .store
        .login_token_owner(&hash, now)
        .await?
        .ok_or_else(invalid)?;
    let account = state.store.user(&owner).await?.ok_or_else(invalid)?;
    if account.deactivated {
        return Err(ApiError::new(
            ErrorKind::UserDeactivated,
            "This account has been deactivated",
        ));
    }
    if account.locked {
        return Err(crate::extract::locked());
    }
    if requested_device {
        check_not_a_key_id(state, &owner, &device_id).await?;
    }
    let user_id = state
        .store
        .consume_login_token(&hash, now)
        .await?
        .filter(|u| *u == owner)
        .ok_or_else(invalid)?;
    let response = start_session(
        state,
        user_id,
        device_id,
        body.initial_device_display_name,
        body.refresh_token,
    )
    .await?;
    state.metrics.login(LoginOutcome::Ok);
    Ok(response)
}

/// `POST /_matrix/client/v1/login/get_token`: a logged-in user, after UIA,
/// gets a single-use token to sign in another device.
pub async fn get_token(
    State(state): State<AppState>,
    requester: crate::extract::Requester,
    method: axum::http::Method,
    uri: axum::http::Uri,
    crate::extract::RawJson(raw): crate::extract::RawJson,
) -> ApiResult<Json<Value>> {
    // Reserved now, counted once a token is issued.
    let issued = state
        .limits
        .login_tokens_per_account
        .reserve(requester.user_id.to_string())
        .map_err(ApiError::limited)?;
    // The spec's 400 for a user who cannot complete UIA (and so cannot
    // generate tokens), rather than a challenge no flow can answer.
    if !crate::uia::can_reauthenticate(
        &state,
        &requester.user_id,
        crate::uia::Sensitive::LoginToken,
    )
    .await?
    {
        return Err(ApiError::new(
            ErrorKind::Unknown,
            "This account cannot authenticate to generate login tokens",
        ));
    }
    let authorised = crate::uia::reauthenticate(
        &state,
        &requester,
        crate::uia::Sensitive::LoginToken,
        &method,
        &uri,
        &raw,
    )
    .await?;
    let minted = token::generate(token::TokenKind::Login);
    let now = state.clock.now_ms();
    let lifetime = state.config.tokens.login_token_lifetime_ms;
    authorised
        .spend_on(&state, async {
            Ok(state
                .store
                .create_login_token(
                    &token::hash(&minted),
                    &requester.user_id,
                    now.saturating_add(lifetime),
                    now,
                )
                .await?)
        })
        .await?;
    issued.keep();
    Ok(Json(
        json!({ "login_token": minted.as_str(), "expires_in_ms": lifetime }),
    ))
}

/// Creates (or takes over) the device and hands out its tokens.
pub async fn start_session(
    state: &AppState,
    user_id: UserId,
    device_id: String,
    display_name: Option<String>,
    refreshable: bool,
) -> ApiResult<LoginResponse> {
    if let Some(homeserver) = &state.homeserver {
        homeserver
            .prepare_device(&user_id, &device_id, display_name.as_deref())
            .await
            .map_err(|e| crate::homeserver::unavailable(&e))?;
    }
    let minted = issue::mint(state, refreshable);
    let created = state
        .store
        .create_session(NewSession {
            user_id: user_id.clone(),
            device_id: device_id.clone(),
            initial_display_name: display_name,
            tokens: minted.pair,
            now: state.clock.now_ms(),
        })
        .await;
    if let Err(e) = created {
        if let Some(homeserver) = &state.homeserver {
            homeserver.forget_device(&user_id, &device_id).await;
        }
        return Err(e.into());
    }
    state.sessions.invalidate_device(&user_id, &device_id);
    tracing::info!(user_id = %user_id, device_id = %device_id, "session started");
    Ok(LoginResponse {
        user_id: user_id.to_string(),
        access_token: minted.access_token.to_string(),
        device_id,
        home_server: state.config.server_name.clone(),
        refresh_token: minted.refresh_token.map(|t| t.to_string()),
        expires_in_ms: minted.expires_in_ms,
        well_known: state.well_known(),
    })
}
