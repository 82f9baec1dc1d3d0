//! The Matrix `errcode`s, one table for both halves of Gatehouse: the
//! server names the codes it sends from it, the client parses the codes it
//! receives with it, so the two cannot drift apart. No dependencies, so the
//! client does not carry the server's (password hashing, phone numbers).

/// Declares [`ErrorCode`] and its string table from one list.
macro_rules! errcodes {
    ($($(#[$doc:meta])* $variant:ident => $code:literal,)*) => {
        /// A Matrix `errcode`. Codes this table does not know (another
        /// server's extensions) are kept as they came, in `Other`.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// A code outside the spec's list, verbatim.
            Other(String),
        }

        impl ErrorCode {
            /// Every code the spec defines, in table order.
            pub const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code for `s`; never fails (unknown codes become `Other`).
            pub fn parse(s: &str) -> Self {
                match s {
                    $($code => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }

            /// The code's string, for a spec code known at compile time.
            pub const fn known_str(&self) -> Option<&'static str> {
                match self {
                    $(Self::$variant => Some($code),)*
                    Self::Other(_) => None,
                }
            }

            /// The code as it goes on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    Self::Other(s) => s,
                    known => known.known_str().unwrap_or("M_UNKNOWN"),
                }
            }
        }
    };
}

errcodes! {
    /// Forbidden access: bad credentials, or not allowed.
    Forbidden => "M_FORBIDDEN",
    /// The access or refresh token is not recognised.
    UnknownToken => "M_UNKNOWN_TOKEN",
    /// No access token was given.
    MissingToken => "M_MISSING_TOKEN",
    /// The account was locked by an administrator.
    UserLocked => "M_USER_LOCKED",
    /// The account is suspended.
    UserSuspended => "M_USER_SUSPENDED",
    /// The request body is JSON of the wrong shape.
    BadJson => "M_BAD_JSON",
    /// The request body is not JSON.
    NotJson => "M_NOT_JSON",
    /// No such resource.
    NotFound => "M_NOT_FOUND",
    /// Too many requests.
    LimitExceeded => "M_LIMIT_EXCEEDED",
    /// The endpoint or method is not implemented.
    Unrecognized => "M_UNRECOGNIZED",
    /// Any other error.
    Unknown => "M_UNKNOWN",
    /// The request was not correctly authorised (UIA).
    Unauthorized => "M_UNAUTHORIZED",
    /// The account is deactivated.
    UserDeactivated => "M_USER_DEACTIVATED",
    /// The user ID is taken.
    UserInUse => "M_USER_IN_USE",
    /// The user ID is not valid.
    InvalidUsername => "M_INVALID_USERNAME",
    /// The room alias is taken.
    RoomInUse => "M_ROOM_IN_USE",
    /// The initial room state is invalid.
    InvalidRoomState => "M_INVALID_ROOM_STATE",
    /// The 3PID belongs to another account.
    ThreepidInUse => "M_THREEPID_IN_USE",
    /// No account has this 3PID.
    ThreepidNotFound => "M_THREEPID_NOT_FOUND",
    /// The 3PID could not be validated.
    ThreepidAuthFailed => "M_THREEPID_AUTH_FAILED",
    /// The server does not permit this 3PID.
    ThreepidDenied => "M_THREEPID_DENIED",
    /// The server does not support this 3PID medium.
    ThreepidMediumNotSupported => "M_THREEPID_MEDIUM_NOT_SUPPORTED",
    /// The identity server is not trusted.
    ServerNotTrusted => "M_SERVER_NOT_TRUSTED",
    /// The room version is not supported.
    UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
    /// The room's version is not one this server can join.
    IncompatibleRoomVersion => "M_INCOMPATIBLE_ROOM_VERSION",
    /// The state of a resource forbids the request.
    BadState => "M_BAD_STATE",
    /// Guests may not do this.
    GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
    /// A captcha must be completed.
    CaptchaNeeded => "M_CAPTCHA_NEEDED",
    /// The captcha answer was wrong.
    CaptchaInvalid => "M_CAPTCHA_INVALID",
    /// A required parameter is missing.
    MissingParam => "M_MISSING_PARAM",
    /// A parameter has a wrong value.
    InvalidParam => "M_INVALID_PARAM",
    /// The request or item is too large.
    TooLarge => "M_TOO_LARGE",
    /// The resource is reserved by an application service.
    Exclusive => "M_EXCLUSIVE",
    /// A server resource limit (monthly active users…) was reached.
    ResourceLimitExceeded => "M_RESOURCE_LIMIT_EXCEEDED",
    /// A per-user limit was reached.
    UserLimitExceeded => "M_USER_LIMIT_EXCEEDED",
    /// The server-notices room cannot be left.
    CannotLeaveServerNoticeRoom => "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
    /// The password is too weak.
    WeakPassword => "M_WEAK_PASSWORD",
    /// A signature does not verify.
    InvalidSignature => "M_INVALID_SIGNATURE",
    /// An application service named a device that does not exist.
    UnknownDevice => "M_UNKNOWN_DEVICE",
    /// The application service may not log in this way.
    AppserviceLoginUnsupported => "M_APPSERVICE_LOGIN_UNSUPPORTED",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for code in ErrorCode::KNOWN {
            let s = code.known_str().expect("a known code has its string");
            assert!(s.starts_with("M_"), "{s}");
            assert_eq!(&ErrorCode::parse(s), code, "{s}");
            assert_eq!(code.as_str(), s);
        }
        let mut strings: Vec<_> = ErrorCode::KNOWN.iter().map(ErrorCode::as_str).collect();
        strings.sort_unstable();
        strings.dedup();
        assert_eq!(strings.len(), ErrorCode::KNOWN.len(), "no code twice");
    }

    #[test]
    fn unknown_codes_are_kept() {
        let other = ErrorCode::parse("COM.EXAMPLE_CUSTOM");
        assert_eq!(other, ErrorCode::Other("COM.EXAMPLE_CUSTOM".into()));
        assert_eq!(other.as_str(), "COM.EXAMPLE_CUSTOM");
        assert_eq!(other.known_str(), None);
    }
}
