//! Matrix signed JSON: canonical encoding and ed25519 signature checks, as
//! cross-signing uploads need (a self-signing or user-signing key must be
//! signed by the user's master key).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;

/// Why a signature does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signing key is not a valid ed25519 public key")]
    BadKey,
    #[error("no signature by {0}")]
    Missing(String),
    #[error("the signature is malformed")]
    Malformed,
    #[error("the signature does not match")]
    Mismatch,
}

/// Matrix canonical JSON: object keys sorted by code point, no
/// insignificant whitespace, UTF-8 as is. Sorting here rather than relying
/// on serde_json's map order keeps it right even if some dependency turns
/// on `preserve_order`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The bytes a signature covers: the object without `signatures` and `unsigned`.
pub fn signable_bytes(object: &Value) -> Vec<u8> {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    canonical_json(&copy).into_bytes()
}

/// Checks that `object` carries a valid signature by `user_id`'s ed25519
/// key `public_key` (unpadded base64, which is also the key's ID).
pub fn verify(object: &Value, user_id: &str, public_key: &str) -> Result<(), SignatureError> {
    let key_bytes: [u8; 32] = STANDARD_NO_PAD
        .decode(public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::BadKey)?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| SignatureError::BadKey)?;
    let key_id = format!("ed25519:{public_key}");
    let sig = object
        .get("signatures")
        .and_then(|s| s.get(user_id))
        .and_then(|s| s.get(&key_id))
        .and_then(Value::as_str)
        .ok_or_else(|| SignatureError::Missing(key_id.clone()))?;
    let sig_bytes: [u8; 64] = STANDARD_NO_PAD
        .decode(sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::Malformed)?;
    key.verify_strict(&signable_bytes(object), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| SignatureError::Mismatch)
}

/// Unpadded standard base64, Matrix's encoding for keys and signatures.
pub fn base64(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_and_compacts() {
        let v = json!({"b": 1, "a": {"d": [1, "x"], "c": "é"}, "": null});
        assert_eq!(
            canonical_json(&v),
            r#"{"":null,"a":{"c":"é","d":[1,"x"]},"b":1}"#
        );
    }

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let signer = SigningKey::from_bytes(&[7u8; 32]);
        let public = base64(signer.verifying_key().as_bytes());
        let mut obj =
            json!({"user_id": "@a:hs", "usage": ["self_signing"], "keys": {"ed25519:K": "K"}});
        let sig = signer.sign(&signable_bytes(&obj));
        obj["signatures"] =
            json!({"@a:hs": {format!("ed25519:{public}"): base64(&sig.to_bytes())}});
        assert_eq!(verify(&obj, "@a:hs", &public), Ok(()));
        assert!(matches!(
            verify(&obj, "@b:hs", &public),
            Err(SignatureError::Missing(_))
        ));
        let mut tampered = obj.clone();
        tampered["usage"] = json!(["user_signing"]);
        assert_eq!(
            verify(&tampered, "@a:hs", &public),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(&obj, "@a:hs", "short"), Err(SignatureError::BadKey));
    }
}
