//! Identifier types (`m.id.user`, `m.id.thirdparty`, `m.id.phone`) and the
//! canonical forms of third-party IDs, so that what a person typed and what
//! was stored meet in one spelling.

use crate::user_id::{UserId, resolve_login_user};

/// A third-party identifier medium this server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Medium {
    Email,
    Msisdn,
}

impl Medium {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Msisdn => "msisdn",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "email" => Some(Self::Email),
            "msisdn" => Some(Self::Msisdn),
            _ => None,
        }
    }
}

/// A third-party ID in canonical form; the only form the store ever sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Threepid {
    pub medium: Medium,
    pub address: String,
}

/// Why an identifier cannot be used. Each maps to one Matrix error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("unknown identifier type '{0}'")]
    UnknownType(String),
    #[error("unsupported third-party medium '{0}'")]
    UnsupportedMedium(String),
    #[error("invalid email address")]
    InvalidEmail,
    #[error("invalid phone number")]
    InvalidPhone,
    #[error("'{0}' is not a two-letter ISO 3166-1 country code")]
    InvalidCountry(String),
}

/// An identifier as the client sent it, before canonicalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identifier {
    /// `m.id.user`: a localpart or a full user ID.
    User { user: String },
    /// `m.id.thirdparty`: a medium and its address.
    ThirdParty { medium: String, address: String },
    /// `m.id.phone`: a number as dialled from `country`.
    Phone { country: String, phone: String },
}

/// Who an identifier points at, ready for a store lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A user ID on this server, or `None` when the input cannot name one
    /// (treated as an unknown user, at the same cost).
    User(Option<UserId>),
    /// A third-party ID to look up in the 3PID table.
    Threepid(Threepid),
}

impl Identifier {
    /// Canonicalises the identifier into what the store looks up.
    pub fn resolve(&self, server_name: &str) -> Result<Subject, IdentifierError> {
        match self {
            Self::User { user } => Ok(Subject::User(resolve_login_user(user, server_name))),
            Self::ThirdParty { medium, address } => {
                let medium = Medium::parse(medium)
                    .ok_or_else(|| IdentifierError::UnsupportedMedium(medium.clone()))?;
                Ok(Subject::Threepid(canonical_threepid(medium, address)?))
            }
            Self::Phone { country, phone } => Ok(Subject::Threepid(Threepid {
                medium: Medium::Msisdn,
                address: phone_to_msisdn(country, phone)?,
            })),
        }
    }
}

/// Canonicalises an address of a known medium.
pub fn canonical_threepid(medium: Medium, address: &str) -> Result<Threepid, IdentifierError> {
    let address = match medium {
        Medium::Email => canonical_email(address)?,
        Medium::Msisdn => canonical_msisdn(address)?,
    };
    Ok(Threepid { medium, address })
}

/// Email canonical form: surrounding whitespace trimmed, domain lowercased,
/// local part case-folded (as Synapse does, so imported accounts still match).
pub fn canonical_email(address: &str) -> Result<String, IdentifierError> {
    let address = address.trim();
    let (local, domain) = address
        .rsplit_once('@')
        .ok_or(IdentifierError::InvalidEmail)?;
    if local.is_empty()
        || domain.is_empty()
        || address.len() > 254
        || address.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(IdentifierError::InvalidEmail);
    }
    Ok(format!(
        "{}@{}",
        local.to_lowercase(),
        domain.to_ascii_lowercase()
    ))
}

/// MSISDN canonical form: the E.164 digits without `+`. Accepts the digits
/// with a leading `+` and common separators, as clients often send them.
pub fn canonical_msisdn(address: &str) -> Result<String, IdentifierError> {
    let trimmed = address.trim();
    let digits: String = trimmed
        .trim_start_matches('+')
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdentifierError::InvalidPhone);
    }
    // Re-parsed as an international number, so that "+44 07700…"-style
    // input canonicalises as `m.id.phone` does, and a number with no
    // country code is refused; parsed, not validated (see `phone_to_msisdn`).
    let parsed = phonenumber::parse(None, format!("+{digits}"))
        .map_err(|_| IdentifierError::InvalidPhone)?;
    Ok(e164_digits(&parsed))
}

/// `m.id.phone`: a number "as dialled from" `country` → MSISDN.
pub fn phone_to_msisdn(country: &str, phone: &str) -> Result<String, IdentifierError> {
    let id: phonenumber::country::Id = country
        .trim()
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| IdentifierError::InvalidCountry(country.to_owned()))?;
    // Parsed, not validated: libphonenumber's ranges lag behind real
    // allocations and leave out test ranges (Ofcom's 07700 900xxx, seed
    // 000's own example). Synapse accepts whatever parses; an SMS code is
    // what proves a number.
    let parsed =
        phonenumber::parse(Some(id), phone.trim()).map_err(|_| IdentifierError::InvalidPhone)?;
    Ok(e164_digits(&parsed))
}

fn e164_digits(number: &phonenumber::PhoneNumber) -> String {
    number
        .format()
        .mode(phonenumber::Mode::E164)
        .to_string()
        .trim_start_matches('+')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails_are_canonicalised() {
        assert_eq!(
            canonical_email("  Alice.Smith@Example.ORG ").unwrap(),
            "alice.smith@example.org"
        );
        assert_eq!(
            canonical_email("a@b@Example.org").unwrap(),
            "a@b@example.org"
        );
        for bad in ["", "alice", "@example.org", "alice@", "a b@example.org"] {
            assert_eq!(
                canonical_email(bad),
                Err(IdentifierError::InvalidEmail),
                "{bad}"
            );
        }
    }

    #[test]
    fn phones_become_e164_digits() {
        assert_eq!(
            phone_to_msisdn("GB", "07400 123456").unwrap(),
            "447400123456"
        );
        assert_eq!(
            phone_to_msisdn("gb", "+44 7400 123456").unwrap(),
            "447400123456"
        );
        assert_eq!(
            phone_to_msisdn("US", "(201) 555-0123").unwrap(),
            "12015550123"
        );
        // Seed 000's example: in a range libphonenumber deems unallocated.
        assert_eq!(
            phone_to_msisdn("GB", "07700900000").unwrap(),
            "447700900000"
        );
        assert_eq!(canonical_msisdn("+447700900000").unwrap(), "447700900000");
        assert_eq!(
            phone_to_msisdn("GB", "1"),
            Err(IdentifierError::InvalidPhone)
        );
        assert_eq!(
            phone_to_msisdn("GB", "not a number"),
            Err(IdentifierError::InvalidPhone)
        );
        assert!(matches!(
            phone_to_msisdn("XX", "07400123456"),
            Err(IdentifierError::InvalidCountry(_))
        ));
    }

    #[test]
    fn msisdns_accept_plus_and_separators() {
        assert_eq!(canonical_msisdn("+44 7400-123456").unwrap(), "447400123456");
        assert_eq!(canonical_msisdn("447400123456").unwrap(), "447400123456");
        assert_eq!(canonical_msisdn("abc"), Err(IdentifierError::InvalidPhone));
        assert_eq!(
            canonical_msisdn("1234567890123456"),
            Err(IdentifierError::InvalidPhone)
        );
    }

    #[test]
    fn identifiers_resolve() {
        let phone = Identifier::Phone {
            country: "GB".into(),
            phone: "07400123456".into(),
        };
        let tp = Identifier::ThirdParty {
            medium: "msisdn".into(),
            address: "447400123456".into(),
        };
        assert_eq!(phone.resolve("hs").unwrap(), tp.resolve("hs").unwrap());
        let fax = Identifier::ThirdParty {
            medium: "fax".into(),
            address: "1".into(),
        };
        assert_eq!(
            fax.resolve("hs"),
            Err(IdentifierError::UnsupportedMedium("fax".into()))
        );
        let user = Identifier::User {
            user: "@Bob:hs".into(),
        };
        assert_eq!(
            user.resolve("hs").unwrap(),
            Subject::User(Some(UserId::new("bob", "hs").unwrap()))
        );
    }

    proptest! {
        #[test]
        fn canonical_email_is_idempotent(local in "[A-Za-z0-9._%+-]{1,20}", domain in "[A-Za-z0-9-]{1,20}\\.[A-Za-z]{2,6}") {
            let once = canonical_email(&format!("{local}@{domain}")).unwrap();
            prop_assert_eq!(canonical_email(&once).unwrap(), once.clone());
        }

        #[test]
        fn phone_parsing_never_panics(country in "[A-Za-z]{0,3}", phone in ".{0,30}") {
            let _ = phone_to_msisdn(&country, &phone);
            let _ = canonical_msisdn(&phone);
        }
    }
}
