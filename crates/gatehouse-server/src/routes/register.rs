//! Registration: `POST /register`, `GET /register/available`, and
//! `GET /v1/register/m.login.registration_token/validity`.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri};
use gatehouse_core::ErrorKind;
use gatehouse_core::user_id::{LocalpartError, UserId};
use gatehouse_store::{NewRegistration, NewSession, NewUser, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::login::check_device_id;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, MatrixQuery, RawJson, typed};
use crate::issue;
use crate::ratelimit::Reservation;
use crate::state::AppState;
use crate::uia::{self, Operation, Subject};

#[derive(Deserialize)]
pub struct KindQuery {
    kind: Option<String>,
}

#[derive(Deserialize)]
struct RegisterBody {
    username: Option<String>,
    password: Option<super::login::Secret>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
}

/// The registration parameters a UIA session carries, so that a request
/// with only `auth` (as the spec's examples send, and clients resuming a
/// session do) completes the registration its first request asked for.
#[derive(Default, Deserialize)]
struct Remembered {
    username: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
    /// Argon2id; the password itself is never stored.
    password_hash: Option<String>,
}

impl Remembered {
    const KEY: &'static str = "register";

    fn from_session(data: &Value) -> Self {
        serde_json::from_value(data[Self::KEY].clone()).unwrap_or_default()
    }
}

/// Updates the session's registration parameters from this request: each
/// one it names replaces the remembered one. The first password given is
/// hashed and kept (one Argon2 hash per registration, as Synapse does);
/// later ones are ignored, so stage after stage costs no further hashing.
async fn remember_parameters(
    state: &AppState,
    raw: &Value,
    password: Option<super::login::Secret>,
    data: &mut Value,
) -> ApiResult<()> {
    if !data[Remembered::KEY].is_object() {
        data[Remembered::KEY] = json!({});
    }
    let stored = &mut data[Remembered::KEY];
    for key in [
        "username",
        "device_id",
        "initial_device_display_name",
        "inhibit_login",
        "refresh_token",
    ] {
        if let Some(v) = raw.get(key).filter(|v| !v.is_null()) {
            stored[key] = v.clone();
        }
    }
    if let Some(password) = password
        && stored["password_hash"].is_null()
    {
        let hash = state
            .hasher
            .hash(password.take())
            .await
            .map_err(|_| ApiError::limited(1000))?;
        stored["password_hash"] = Value::String(hash);
    }
    Ok(())
}

/// A random localpart, for guests and for registrations without a
/// `username`: 16 characters of `[a-z0-9]`, about 80 bits.
fn generated_localpart() -> String {
    crate::routes::threepid_random(16).to_ascii_lowercase()
}

/// Checks a wanted localpart: grammar, reservation, availability.
pub(crate) async fn check_username(state: &AppState, username: &str) -> ApiResult<UserId> {
    check_username_for(state, username, None).await
}

/// [`check_username`] for a registration by `appservice` (which may take
/// names of its namespaces), or by anyone else (who may take none that an
/// appservice holds exclusively).
async fn check_username_for(
    state: &AppState,
    username: &str,
    appservice: Option<&crate::appservice::Appservice>,
) -> ApiResult<UserId> {
    let id = UserId::new(username, &state.config.server_name).map_err(|e| {
        let why = match e {
            LocalpartError::Empty => "User ID cannot be empty",
            LocalpartError::InvalidCharacter => {
                "User ID can only contain characters a-z, 0-9, or '=_-./+'"
            }
            LocalpartError::TooLong => "User ID is too long",
        };
        ApiError::new(ErrorKind::InvalidUsername, why)
    })?;
    match appservice {
        Some(service) => service.check_may_claim(&state.appservices, &id)?,
        None if state.appservices.is_exclusive(&id) => {
            return Err(ApiError::new(
                ErrorKind::Exclusive,
                "This user ID is reserved by an application service",
            ));
        }
        None => {}
    }
    if state
        .config
        .registration
        .reserved_localparts
        .iter()
        .any(|r| r == username)
    {
        return Err(ApiError::new(
            ErrorKind::Exclusive,
            "This user ID is reserved",
        ));
    }
    if state.store.user(&id).await?.is_some() {
        return Err(ApiError::new(ErrorKind::UserInUse, "User ID already taken"));
    }
    // The homeserver may hold names Gatehouse never issued (bridged users,
    // accounts not imported): taking one would hand over its rooms.
    // A name Synapse reserves for an appservice is the requesting
    // service's to take: it passed `check_may_claim` against the same
    // registration files above.
    if let Some(homeserver) = &state.homeserver {
        use crate::homeserver::synapse::Availability;
        match homeserver
            .client
            .localpart_availability(id.localpart())
            .await
            .map_err(|e| crate::homeserver::unavailable(&e))?
        {
            Availability::Available => {}
            Availability::Reserved if appservice.is_some() => {}
            Availability::Reserved => {
                return Err(ApiError::new(
                    ErrorKind::Exclusive,
                    "This user ID is reserved by an application service",
                ));
            }
            Availability::Taken => {
                return Err(ApiError::new(ErrorKind::UserInUse, "User ID already taken"));
            }
        }
    }
    Ok(id)
}

impl RegisterResponse {
    /// The answer for `user_id`, with the session `minted` for `device_id`
    /// unless there is none (`inhibit_login`).
    fn new(
        state: &AppState,
        user_id: &UserId,
        device_id: String,
        minted: Option<&issue::Minted>,
    ) -> Self {
        Self {
            user_id: user_id.to_string(),
            home_server: state.config.server_name.clone(),
            access_token: minted.map(|m| m.access_token.to_string()),
            device_id: minted.is_some().then_some(device_id),
            refresh_token: minted.and_then(|m| m.refresh_token.as_ref().map(|t| t.to_string())),
            expires_in_ms: minted.and_then(|m| m.expires_in_ms),
        }
    }
}

/// One username check from `ip` (`rate_limits.username_checks_per_address`):
/// each answer tells whether an account exists.
fn count_username_check(state: &AppState, ip: IpAddr) -> ApiResult<()> {
    state
        .limits
        .username_checks_per_address
        .check(ip)
        .map_err(ApiError::limited)
}

/// `access_token` and `device_id` are absent with `inhibit_login`.
#[derive(Serialize)]
pub struct RegisterResponse {
    user_id: String,
    home_server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_ms: Option<u64>,
}

/// One more account from this address
/// (`rate_limits.registration_per_address`), reserved until the account is
/// created: only a created account counts (`keep`), but parallel requests
/// cannot all pass while none has finished.
fn reserve_registration(state: &AppState, ip: IpAddr) -> ApiResult<Reservation<'_, IpAddr>> {
    state
        .limits
        .registrations_per_address
        .reserve(ip)
        .map_err(ApiError::limited)
}

pub async fn register(
    State(state): State<AppState>,
    MatrixQuery(query): MatrixQuery<KindQuery>,
    ClientIp(ip): ClientIp,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    RawJson(raw): RawJson,
) -> ApiResult<Json<RegisterResponse>> {
    match query.kind.as_deref() {
        None | Some("user") => {}
        Some("guest") => return register_guest(&state, ip, &raw).await,
        Some(other) => return Err(ApiError::invalid(format!("Unknown kind: {other}"))),
    }
    // Appservices register their users whether or not registration is open.
    if raw.get("type").and_then(Value::as_str) == Some(crate::appservice::LOGIN_TYPE) {
        return register_appservice(&state, &headers, &raw).await;
    }
    if !state.config.registration.enabled {
        return Err(ApiError::forbidden("Registration is disabled"));
    }
    let registration_slot = reserve_registration(&state, ip)?;
    let body: RegisterBody = typed(&raw)?;
    // A name that cannot be had is refused before any stage, as Synapse
    // does; it is checked again once the stages are done.
    if let Some(username) = &body.username {
        count_username_check(&state, ip)?;
        check_username(&state, username).await?;
    }
    if let Some(device_id) = &body.device_id {
        check_device_id(Some(device_id.clone()))?;
    }
    let subject = Subject {
        ip: Some(ip),
        ..Subject::default()
    };
    // The challenge comes first, whatever the body holds (`{}` included);
    // the parameters are kept in the session, the password as its hash.
    let authorised = uia::authorise_remembering(
        &state,
        Operation::Register,
        &subject,
        &method,
        uri.path(),
        &raw,
        async |data| remember_parameters(&state, &raw, body.password, data).await,
    )
    .await?;
    let token = authorised.registration_token();
    let params = Remembered::from_session(&authorised.session.data);
    // Any failure from here on gives the session back (with the token use
    // it reserved): the client may retry the same request with it.
    let Some(hash) = params.password_hash else {
        authorised.release(&state).await?;
        return Err(ApiError::missing("password"));
    };
    // "If omitted, the homeserver MUST generate a Matrix ID local part."
    let username = params.username.unwrap_or_else(generated_localpart);
    let user_id = match check_username(&state, &username).await {
        Ok(id) => id,
        Err(e) => {
            authorised.release(&state).await?;
            return Err(e);
        }
    };
    let device_id = check_device_id(params.device_id)?;
    let body = RegisterBody {
        username: Some(username),
        password: None,
        device_id: Some(device_id.clone()),
        initial_device_display_name: params.initial_device_display_name,
        inhibit_login: params.inhibit_login,
        refresh_token: params.refresh_token,
    };
    let now = state.clock.now_ms();
    let minted = (!body.inhibit_login).then(|| issue::mint(&state, body.refresh_token));
    let registration = NewRegistration {
        user: NewUser {
            user_id: user_id.clone(),
            password_hash: Some(hash),
            is_admin: false,
            is_guest: false,
            created_at: now,
        },
        threepids: authorised.validated_threepids(),
        registration_token: token.clone(),
        session: minted.as_ref().map(|m| NewSession {
            user_id: user_id.clone(),
            device_id: device_id.clone(),
            initial_display_name: body.initial_device_display_name.clone(),
            tokens: m.pair,
            now,
        }),
        upstream_link: None,
    };
    if let Some(homeserver) = &state.homeserver {
        let emails = registration
            .threepids
            .iter()
            .filter(|t| t.medium == gatehouse_core::identifier::Medium::Email)
            .map(|t| t.address.clone())
            .collect::<Vec<_>>();
        let device = registration
            .session
            .as_ref()
            .map(|s| (s.device_id.as_str(), s.initial_display_name.as_deref()));
        if let Err(e) = homeserver
            .prepare_registration(&user_id, &emails, device)
            .await
        {
            authorised.release(&state).await?;
            return Err(crate::homeserver::unavailable(&e));
        }
    }
    if let Err(e) = state.store.register(registration).await {
        if let (Some(homeserver), true) = (&state.homeserver, minted.is_some()) {
            homeserver.forget_device(&user_id, &device_id).await;
        }
        authorised.release(&state).await?;
        return Err(match e {
            StoreError::UserExists => ApiError::new(ErrorKind::UserInUse, "User ID already taken"),
            StoreError::ThreepidInUse => {
                ApiError::new(ErrorKind::ThreepidInUse, "Third-party ID already in use")
            }
            StoreError::TokenUnusable => ApiError::new(
                ErrorKind::Unauthorized,
                "Registration token no longer valid",
            ),
            other => other.into(),
        });
    }
    registration_slot.keep();
    uia::record_accepted_terms(&state, &authorised.session, &user_id).await?;
    tracing::info!(user_id = %user_id, "registered");
    Ok(Json(RegisterResponse::new(
        &state,
        &user_id,
        device_id,
        minted.as_ref(),
    )))
}

/// `type: m.login.application_service`: an appservice, authenticated by its
/// `as_token`, creates a user of its namespaces: no password, no UIA, not
/// counted against the per-address limit (as Synapse).
async fn register_appservice(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    raw: &Value,
) -> ApiResult<Json<RegisterResponse>> {
    let Some(service) = crate::appservice::caller(state, headers) else {
        let has_token = headers.contains_key(axum::http::header::AUTHORIZATION);
        return Err(if has_token {
            ApiError::unknown_token(false, "Not an application service token")
        } else {
            ApiError::new(
                ErrorKind::MissingToken,
                "This registration type needs an application service token",
            )
        });
    };
    let body: RegisterBody = typed(raw)?;
    let username = body.username.ok_or_else(|| ApiError::missing("username"))?;
    let user_id = check_username_for(state, &username, Some(&service)).await?;
    let device_id = check_device_id(body.device_id)?;
    let now = state.clock.now_ms();
    let minted = (!body.inhibit_login).then(|| issue::mint(state, body.refresh_token));
    let registration = NewRegistration {
        user: NewUser {
            user_id: user_id.clone(),
            password_hash: None,
            is_admin: false,
            is_guest: false,
            created_at: now,
        },
        threepids: Vec::new(),
        registration_token: None,
        session: minted.as_ref().map(|m| NewSession {
            user_id: user_id.clone(),
            device_id: device_id.clone(),
            initial_display_name: body.initial_device_display_name.clone(),
            tokens: m.pair,
            now,
        }),
        upstream_link: None,
    };
    if let Some(homeserver) = &state.homeserver {
        let device = registration
            .session
            .as_ref()
            .map(|s| (s.device_id.as_str(), s.initial_display_name.as_deref()));
        // Only the service itself may create the user there (its namespace
        // is exclusive in Synapse's copy of the registration too).
        if let Some(authorization) = headers.get(axum::http::header::AUTHORIZATION) {
            homeserver
                .client
                .register_appservice_user(user_id.localpart(), authorization)
                .await
                .map_err(|e| crate::homeserver::unavailable(&e))?;
        }
        homeserver
            .prepare_registration(&user_id, &[], device)
            .await
            .map_err(|e| crate::homeserver::unavailable(&e))?;
    }
    if let Err(e) = state.store.register(registration).await {
        if let (Some(homeserver), true) = (&state.homeserver, minted.is_some()) {
            homeserver.forget_device(&user_id, &device_id).await;
        }
        return Err(match e {
            StoreError::UserExists => ApiError::new(ErrorKind::UserInUse, "User ID already taken"),
            other => other.into(),
        });
    }
    tracing::info!(user_id = %user_id, appservice = %service.id, "registered by appservice");
    Ok(Json(RegisterResponse::new(
        state,
        &user_id,
        device_id,
        minted.as_ref(),
    )))
}

/// `kind=guest`: an account with a generated name, no password and no UIA.
async fn register_guest(
    state: &AppState,
    ip: IpAddr,
    raw: &Value,
) -> ApiResult<Json<RegisterResponse>> {
    if !state.config.registration.guest_access {
        return Err(ApiError::new(
            ErrorKind::GuestAccessForbidden,
            "Guest access is disabled",
        ));
    }
    let registration_slot = reserve_registration(state, ip)?;
    // The spec: every parameter but `initial_device_display_name` "MUST BE
    // ignored", and the server picks the device ID "regardless of input".
    let display_name = raw
        .get("initial_device_display_name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let localpart = format!("guest-{}", generated_localpart());
    let user_id =
        UserId::new(&localpart, &state.config.server_name).map_err(|_| ApiError::internal())?;
    let device_id = check_device_id(None)?;
    let now = state.clock.now_ms();
    let minted = issue::mint(state, false);
    let registration = NewRegistration {
        user: NewUser {
            user_id: user_id.clone(),
            password_hash: None,
            is_admin: false,
            is_guest: true,
            created_at: now,
        },
        threepids: Vec::new(),
        registration_token: None,
        session: Some(NewSession {
            user_id: user_id.clone(),
            device_id: device_id.clone(),
            initial_display_name: display_name,
            tokens: minted.pair,
            now,
        }),
        upstream_link: None,
    };
    if let Some(homeserver) = &state.homeserver {
        homeserver
            .prepare_registration(&user_id, &[], Some((&device_id, None)))
            .await
            .map_err(|e| crate::homeserver::unavailable(&e))?;
    }
    state.store.register(registration).await?;
    registration_slot.keep();
    Ok(Json(RegisterResponse::new(
        state,
        &user_id,
        device_id,
        Some(&minted),
    )))
}

#[derive(Deserialize)]
pub struct UsernameQuery {
    username: Option<String>,
}

pub async fn available(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MatrixQuery(q): MatrixQuery<UsernameQuery>,
) -> ApiResult<Json<Value>> {
    if !state.config.registration.enabled {
        return Err(ApiError::forbidden("Registration is disabled"));
    }
    let username = q.username.ok_or_else(|| ApiError::missing("username"))?;
    count_username_check(&state, ip)?;
    check_username(&state, &username).await?;
    Ok(Json(json!({ "available": true })))
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

pub async fn token_validity(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    MatrixQuery(q): MatrixQuery<TokenQuery>,
) -> ApiResult<Json<Value>> {
    if !state.config.registration.enabled {
        return Err(ApiError::forbidden("Registration is disabled"));
    }
    uia::check_token_limit(&state, ip)?;
    let token = q.token.ok_or_else(|| ApiError::missing("token"))?;
    // Registration is open but takes no tokens: no token is valid (403 is
    // the spec's answer for closed registration only).
    if !state
        .config
        .registration
        .flows
        .iter()
        .flatten()
        .any(|s| s == gatehouse_core::uia::REGISTRATION_TOKEN)
    {
        return Ok(Json(json!({ "valid": false })));
    }
    let now = state.clock.now_ms();
    let valid = state
        .store
        .registration_token(&token)
        .await?
        .is_some_and(|t| t.usable(now));
    Ok(Json(json!({ "valid": valid })))
}
