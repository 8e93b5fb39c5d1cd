//! JWT access tokens (RFC 9068) as presented to `/v1`, introspection and
//! registration: the header (`typ`, `alg`, the `kid` that picks the key and
//! decides whether a key reload is worth it) and the claims, decoded before
//! and after the signature check.
//!
//! Input: a mode byte, then the header JSON, a newline, the claims JSON, a
//! newline, and extra bytes. The token is built from them: `S` signed by the
//! ring's key, `H` the same with the high-S twin of that signature, `T`
//! signed then one byte of the signed part changed (extra byte 0 says
//! which), `G` the extra bytes as the signature; any other mode byte: the
//! rest of the input is the token as is.
//! Properties: only a token signed by our key over exactly its bytes
//! verifies; what verifies has our `typ`, `alg`, `kid`, issuer and audience,
//! an `exp` within the leeway, and claims that are exactly its payload;
//! verified claims re-sign to a token that verifies to the same; a correctly
//! signed token with valid claims is accepted; the cache answers as the
//! verifier does, cold or warm; a token that verifies is an access token by
//! its shape and never "names an unknown key", and one refused for its key
//! does.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::DateTime;
use dzdesk_auth::credentials::jwt::{generate_key, AccessClaims, JwtError, KeyRing, LEEWAY_SECS};
use dzdesk_auth::credentials::{names_unknown_key, verify_access_token, Audience, Kind};
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;

const ISS: &str = "https://auth.example.com";
const NOW: i64 = 1_800_000_000;
/// A fixed kid, so that seeds can name the ring's key.
const KID: &str = "fuzzkid";

struct Keys {
    ring: KeyRing,
    signer: SigningKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut row = generate_key(Default::default()).expect("a key");
        // The fixed kid in the row and in its JWK alike: a ring leaves out
        // a key whose JWK names another kid.
        let mut jwk: serde_json::Value = serde_json::from_str(&row.public_jwk).expect("our JWK");
        jwk["kid"] = KID.into();
        row.public_jwk = jwk.to_string();
        row.kid = KID.to_owned();
        Keys {
            ring: KeyRing::from_rows(std::slice::from_ref(&row)).expect("a ring"),
            signer: SigningKey::from_pkcs8_der(&row.private_key).expect("our own PKCS#8"),
        }
    })
}

/// ES256 over `signed` (RFC 7518 3.4: R || S), low S as our signer makes.
fn sign(signed: &str) -> Signature {
    let sig: Signature = keys().signer.sign(signed.as_bytes());
    sig.normalize_s().unwrap_or(sig)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The token to present, and whether our key signed exactly its bytes.
fn token(data: &[u8]) -> Option<(String, bool)> {
    let (&mode, rest) = data.split_first()?;
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let header = parts.next().unwrap_or_default();
    let claims = parts.next().unwrap_or_default();
    let extra = parts.next().unwrap_or_default();
    let signed = format!("{}.{}", b64(header), b64(claims));
    Some(match mode {
        b'S' => (format!("{signed}.{}", b64(&sign(&signed).to_bytes())), true),
        b'H' => {
            let (r, s) = sign(&signed).split_scalars();
            let twin = Signature::from_scalars(r, -s).ok()?;
            (format!("{signed}.{}", b64(&twin.to_bytes())), false)
        }
        b'T' => {
            let sig = b64(&sign(&signed).to_bytes());
            let mut bytes = signed.into_bytes();
            let at = usize::from(extra.first().copied().unwrap_or(0)) % bytes.len();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            (format!("{}.{sig}", String::from_utf8(bytes).ok()?), false)
        }
        b'G' => (format!("{signed}.{}", b64(extra)), false),
        _ => (String::from_utf8(rest.to_vec()).ok()?, false),
    })
}

/// What the verifier must accept: our header and valid claims.
fn acceptable(token: &str, claims: &[u8]) -> Option<AccessClaims> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    let typ_ok = header.typ.is_some_and(|t| {
        t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
    });
    let claims: AccessClaims = serde_json::from_slice(claims).ok()?;
    (typ_ok
        && header.alg == Algorithm::ES256
        && header.kid.as_deref() == Some(KID)
        && claims.iss == ISS
        && claims.aud == ISS
        && claims.exp + LEEWAY_SECS >= NOW)
        .then_some(claims)
}

fuzz_target!(|data: &[u8]| {
    let Some((token, signed_by_us)) = token(data) else {
        return;
    };
    let ring = &keys().ring;
    let verified = ring.verify(&token, ISS, ISS, NOW);
    let cold = ring.verify_cached(&token, ISS, ISS, NOW);
    let warm = ring.verify_cached(&token, ISS, ISS, NOW);
    assert_eq!(
        cold.clone().ok(),
        verified.clone().ok(),
        "the cache agrees, cold"
    );
    assert_eq!(warm.ok(), verified.clone().ok(), "the cache agrees, warm");
    let audience = Audience {
        issuer: ISS.into(),
        audience: ISS.into(),
    };
    let now = DateTime::from_timestamp(NOW, 0).expect("a time");
    assert_eq!(
        verify_access_token(ring, &audience, &token, now),
        verified.clone().ok().filter(|c| c.exp > NOW),
        "credentials: verified and not expired by the issuer's clock"
    );

    if verified == Err(JwtError::UnknownKey) {
        assert!(
            names_unknown_key(&token, ring),
            "refused for its key: {token}"
        );
    }
    if signed_by_us && data.first() == Some(&b'S') {
        let claims = data[1..]
            .splitn(3, |&b| b == b'\n')
            .nth(1)
            .unwrap_or_default();
        if let Some(expected) = acceptable(&token, claims) {
            assert_eq!(
                verified.as_ref(),
                Ok(&expected),
                "a valid token of ours is refused"
            );
        }
    }
    let Ok(claims) = verified else {
        return;
    };
    assert!(
        signed_by_us,
        "verified without our signature over its bytes: {token}"
    );
    assert_eq!(Kind::of(&token), Kind::AccessToken);
    assert!(!names_unknown_key(&token, ring));
    let header = jsonwebtoken::decode_header(&token).expect("a verified header decodes");
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some(KID));
    assert!(header.typ.is_some_and(|t| matches!(
        t.to_ascii_lowercase().as_str(),
        "at+jwt" | "application/at+jwt"
    )));
    assert_eq!((claims.iss.as_str(), claims.aud.as_str()), (ISS, ISS));
    assert!(claims.exp + LEEWAY_SECS >= NOW);
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok());
    let from_payload: Option<AccessClaims> = payload.and_then(|p| serde_json::from_slice(&p).ok());
    assert_eq!(
        from_payload.as_ref(),
        Some(&claims),
        "the claims are the payload's"
    );

    let resigned = ring.sign(&claims).expect("verified claims sign");
    assert_eq!(ring.verify(&resigned, ISS, ISS, NOW), Ok(claims));
});
