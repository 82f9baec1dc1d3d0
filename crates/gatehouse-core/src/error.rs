//! The Matrix error codes Gatehouse produces, with the HTTP status each one
//! is sent with. The HTTP layer turns an [`ErrorKind`] plus a message into the
//! spec's JSON body; nothing else decides a status code. The code strings
//! come from the table the client parses with (`gatehouse-errcode`).

use gatehouse_errcode::ErrorCode;

/// A Matrix `errcode` and the extra fields it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: valid JSON with the wrong shape.
    BadJson,
    /// 400: the body is not JSON at all.
    NotJson,
    /// 400: a required key is absent.
    MissingParam,
    /// 400: a key has an unacceptable value.
    InvalidParam,
    /// 400 by default: something the server does not understand (e.g. login type).
    Unknown,
    /// 403: authentication failed or the action is not allowed.
    Forbidden,
    /// 403: the account is deactivated.
    UserDeactivated,
    /// 401, always with `soft_logout: true`: an administrator locked the
    /// account; its sessions stay, unusable until it is unlocked.
    UserLocked,
    /// 403: the account is suspended and this action is one it may not do.
    UserSuspended,
    /// 401: no access token was supplied.
    MissingToken,
    /// 401: the token is not valid. `soft_logout` tells the client whether it
    /// may keep its local state and re-authenticate (expired) or must discard
    /// it (revoked / never valid).
    UnknownToken { soft_logout: bool },
    /// 429: rate limited; the client may retry after this many milliseconds.
    LimitExceeded { retry_after_ms: u64 },
    /// 404: no such endpoint.
    UnrecognizedEndpoint,
    /// 405: the endpoint exists but not with this method.
    UnrecognizedMethod,
    /// 404: no such resource.
    NotFound,
    /// 413: the body is larger than the configured limit.
    TooLarge,
    /// 500: a failure inside the server (storage). The message never carries details.
    Internal,
    /// 400: the user ID is taken.
    UserInUse,
    /// 400: the user ID is not acceptable.
    InvalidUsername,
    /// 400: the user ID is reserved.
    Exclusive,
    /// 400: the 3PID belongs to another account.
    ThreepidInUse,
    /// 400: no such 3PID (on this account / in the validation sessions).
    ThreepidNotFound,
    /// 400: the 3PID was not validated.
    ThreepidAuthFailed,
    /// 400: the server does not permit this 3PID.
    ThreepidDenied,
    /// 400: this server does not do this medium (email/SMS sending is off).
    ThreepidMediumNotSupported,
    /// 400: a signature in a key upload does not verify.
    InvalidSignature,
    /// 401: not correctly authorised (a UIA stage that failed).
    Unauthorized,
    /// 403: guest access is off.
    GuestAccessForbidden,
    /// 401 inside UIA: the captcha answer was wrong.
    CaptchaInvalid,
    /// 401: a user-interactive authentication challenge (no errcode).
    UiaChallenge,
    /// 400: an application service asserted a device that does not exist.
    UnknownDevice,
}

impl ErrorKind {
    /// The spec's `errcode` for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadJson => ErrorCode::BadJson,
            Self::NotJson => ErrorCode::NotJson,
            Self::MissingParam => ErrorCode::MissingParam,
            Self::InvalidParam => ErrorCode::InvalidParam,
            Self::Unknown | Self::Internal => ErrorCode::Unknown,
            Self::Forbidden => ErrorCode::Forbidden,
            Self::UserDeactivated => ErrorCode::UserDeactivated,
            Self::UserLocked => ErrorCode::UserLocked,
            Self::UserSuspended => ErrorCode::UserSuspended,
            Self::MissingToken => ErrorCode::MissingToken,
            Self::UnknownToken { .. } => ErrorCode::UnknownToken,
            Self::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            Self::UnrecognizedEndpoint | Self::UnrecognizedMethod => ErrorCode::Unrecognized,
            Self::NotFound => ErrorCode::NotFound,
            Self::TooLarge => ErrorCode::TooLarge,
            Self::UserInUse => ErrorCode::UserInUse,
            Self::InvalidUsername => ErrorCode::InvalidUsername,
            Self::Exclusive => ErrorCode::Exclusive,
            Self::ThreepidInUse => ErrorCode::ThreepidInUse,
            Self::ThreepidNotFound => ErrorCode::ThreepidNotFound,
            Self::ThreepidAuthFailed => ErrorCode::ThreepidAuthFailed,
            Self::ThreepidDenied => ErrorCode::ThreepidDenied,
            Self::ThreepidMediumNotSupported => ErrorCode::ThreepidMediumNotSupported,
            Self::InvalidSignature => ErrorCode::InvalidSignature,
            Self::Unauthorized | Self::UiaChallenge => ErrorCode::Unauthorized,
            Self::GuestAccessForbidden => ErrorCode::GuestAccessForbidden,
            Self::CaptchaInvalid => ErrorCode::CaptchaInvalid,
            Self::UnknownDevice => ErrorCode::UnknownDevice,
        }
    }

    /// The `errcode` string of the spec.
    pub fn errcode(&self) -> &'static str {
        // Every kind maps to a code of the spec's table.
        self.code().known_str().unwrap_or("M_UNKNOWN")
    }

    /// The HTTP status code the spec pairs with this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadJson
            | Self::NotJson
            | Self::MissingParam
            | Self::InvalidParam
            | Self::Unknown
            | Self::UserInUse
            | Self::InvalidUsername
            | Self::Exclusive
            | Self::ThreepidInUse
            | Self::ThreepidNotFound
            | Self::ThreepidAuthFailed
            | Self::ThreepidDenied
            | Self::ThreepidMediumNotSupported
            | Self::InvalidSignature
            | Self::UnknownDevice => 400,
            Self::MissingToken
            | Self::UnknownToken { .. }
            | Self::Unauthorized
            | Self::CaptchaInvalid
            | Self::UiaChallenge
            | Self::UserLocked => 401,
            Self::Forbidden
            | Self::UserDeactivated
            | Self::UserSuspended
            | Self::GuestAccessForbidden => 403,
            Self::UnrecognizedEndpoint | Self::NotFound => 404,
            Self::UnrecognizedMethod => 405,
            Self::TooLarge => 413,
            Self::LimitExceeded { .. } => 429,
            Self::Internal => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_spec() {
        assert_eq!(ErrorKind::UnknownToken { soft_logout: true }.status(), 401);
        assert_eq!(ErrorKind::UnrecognizedMethod.status(), 405);
        assert_eq!(ErrorKind::UnrecognizedMethod.errcode(), "M_UNRECOGNIZED");
        assert_eq!(ErrorKind::LimitExceeded { retry_after_ms: 1 }.status(), 429);
        assert_eq!(ErrorKind::TooLarge.errcode(), "M_TOO_LARGE");
    }

    #[test]
    fn every_kind_has_a_code_of_the_shared_table() {
        let kinds = [
            ErrorKind::BadJson,
            ErrorKind::Internal,
            ErrorKind::UiaChallenge,
            ErrorKind::UnknownDevice,
            ErrorKind::UserLocked,
        ];
        for kind in kinds {
            assert!(ErrorCode::KNOWN.contains(&kind.code()), "{kind:?}");
            assert_eq!(ErrorCode::parse(kind.errcode()), kind.code());
        }
    }
}
