//! The rules of Matrix authentication, with no HTTP and no SQL in them.
//!
//! Everything here is pure (or takes its clock and randomness as arguments) so
//! it can be unit- and property-tested without a server or a database. The
//! HTTP layer (`gatehouse-server`) and the storage layer (`gatehouse-store`)
//! call into these modules; they never re-implement a rule.

pub mod clock;
pub mod error;
pub mod identifier;
pub mod password;
pub mod random;
pub mod refresh;
pub mod registration_token;
pub mod signing;
pub mod sso;
pub mod token;
pub mod uia;
pub mod user_id;

pub use clock::{Clock, SystemClock, Timestamp};
pub use error::ErrorKind;
pub use gatehouse_errcode::ErrorCode;
