//! RFC 9068 JWT access tokens: ES256 keys kept in the database, signing,
//! verification that pins the algorithm per key, and the JWKS (RFC 7517).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{Duration, NaiveDateTime};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::rand_core::OsRng;
use p256::pkcs8::EncodePrivateKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::models::SigningKeyRow;
use crate::db::sealed::SealedError;
use crate::db::{AnyConnection, Exclusive};
use crate::secrets::Sealer;
use crate::tokens;

/// RFC 9068 2.1: access tokens MUST carry `typ: at+jwt`.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// OIDC Core 2 / RFC 7519 5.1: ID tokens are `typ: JWT`.
pub const ID_TOKEN_TYP: &str = "JWT";
/// Clock skew tolerated when checking `exp`.
pub const LEEWAY_SECS: i64 = 30;
const ALGORITHM: &str = "ES256";

/// The claims of an access token (RFC 9068 2.2), plus the grant it belongs
/// to so that revoking the grant reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub grant_id: String,
}

/// Why a token was refused. Deliberately coarse for clients; precise for tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("wrong token type")]
    WrongType,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("invalid signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("missing or invalid claims")]
    Claims,
}

/// A fresh ES256 key as a database row: PKCS#8 DER private key, public JWK.
pub fn generate_key(now: NaiveDateTime) -> anyhow::Result<SigningKeyRow> {
    let key = SigningKey::random(&mut OsRng);
    let der = key
        .to_pkcs8_der()
        .map_err(|e| anyhow::anyhow!("encoding the signing key: {e}"))?;
    let point = key.verifying_key().to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else {
        anyhow::bail!("uncompressed point without coordinates");
    };
    let kid = tokens::new_id("").chars().take(16).collect::<String>();
    let jwk = Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::ES256),
            key_id: Some(kid.clone()),
            ..Default::default()
        },
        algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
            key_type: EllipticCurveKeyType::EC,
            curve: EllipticCurve::P256,
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
        }),
    };
    Ok(SigningKeyRow {
        kid,
        algorithm: ALGORITHM.to_owned(),
        private_key: der.as_bytes().to_vec(),
        public_jwk: serde_json::to_string(&jwk)?,
        created_at: now,
        retired_at: None,
        revoked_at: None,
    })
}

/// The row's public JWK, if it is the public half of its private key under
/// the row's kid, and the private key as the signer parsed it.
fn consistent_jwk(row: &SigningKeyRow) -> anyhow::Result<(Jwk, EcdsaKeyPair)> {
    use p256::pkcs8::DecodePrivateKey;
    let jwk: Jwk = serde_json::from_str(&row.public_jwk)?;
    let key = SigningKey::from_pkcs8_der(&row.private_key)
        .map_err(|e| anyhow::anyhow!("its private key does not parse: {e}"))?;
    // The signer's parse too, kept for [`KeyRing::from_rows`]: a row it
    // refuses is left out here, not a ring that fails to load.
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &row.private_key)
        .map_err(|e| anyhow::anyhow!("its private key does not parse for signing: {e}"))?;
    let point = key.verifying_key().to_encoded_point(false);
    let AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
        anyhow::bail!("its public key is not an EC key");
    };
    let matches = point.x().map(|x| URL_SAFE_NO_PAD.encode(x)).as_deref() == Some(ec.x.as_str())
        && point.y().map(|y| URL_SAFE_NO_PAD.encode(y)).as_deref() == Some(ec.y.as_str())
        && jwk.common.key_id.as_deref() == Some(row.kid.as_str());
    if !matches {
        anyhow::bail!("its public JWK is not its private key's, or names another kid");
    }
    Ok((jwk, signer))
}

/// Generates a new key that signs from now on. Older keys are retired but
/// stay published until the tokens they signed have expired; with
/// `revoke_previous` (a key believed stolen; seed: "Rotate compromised
/// tokens") they are revoked instead: they leave the JWKS at once and every
/// token they signed stops verifying, on every instance. The private key is
/// stored sealed with `sealer`.
pub fn rotate(
    conn: &mut AnyConnection,
    sealer: &Sealer,
    now: NaiveDateTime,
    revoke_previous: bool,
) -> anyhow::Result<String> {
    let row = generate_key(now)?;
    crate::db::write_transaction(conn, |conn| {
        row.insert_and_retire_others(conn, sealer, now)?;
        if revoke_previous {
            SigningKeyRow::revoke_all_except(conn, &row.kid, now)?;
        }
        Ok::<_, SealedError>(())
    })?;
    Ok(row.kid)
}

/// The keys in use: the one that signs, and every published one.
pub struct KeyRing {
    signing_kid: String,
    /// When the signing key was made (its age is a metric).
    signing_created_at: NaiveDateTime,
    /// The signing key, parsed once. jsonwebtoken's `encode` parses its
    /// PKCS#8 bytes again on every call, and aws-lc's parse recomputes the
    /// public point (a scalar multiplication as costly as the signature):
    /// half of every token's signing time.
    signer: EcdsaKeyPair,
    /// The JOSE headers it signs under, BASE64URL-encoded once (RFC 7515
    /// 7.1): access tokens' and ID tokens'.
    access_header: String,
    id_header: String,
    /// Verification keys by kid; each pinned to ES256.
    verifying: HashMap<String, DecodingKey>,
    jwks: JwkSet,
    /// Tokens whose signature and claims this ring has verified, by SHA-256
    /// of (issuer, audience, token): the same bytes verify the same way, so
    /// a service introspecting one bearer token on every request pays the
    /// ECDSA verification once. Expiry is re-checked on every hit. A reload
    /// that finds the same public keys keeps the map
    /// ([`KeyRing::keep_verified_of`]): dropping it every
    /// `DZDESK_KEY_RELOAD_SECS` made every token pay its verification again
    /// at once, a latency spike a minute. In [`SHARDS`] shards, so that a
    /// shard's growth (a rehash under its write lock) holds up a sixteenth
    /// of the readers, for a sixteenth as long.
    verified: Verified,
}

/// The verification cache's shards, keyed by the SHA-256 above.
type Verified = Arc<[RwLock<HashMap<[u8; 32], AccessClaims>>; SHARDS]>;

/// Verified tokens remembered per key set at most; when a shard is full it
/// starts over.
pub const MAX_VERIFIED: usize = 50_000;
const SHARDS: usize = 16;

fn empty_verified() -> Verified {
    Arc::new(std::array::from_fn(|_| RwLock::new(HashMap::new())))
}

impl KeyRing {
    /// Loads the current keys, creating the first one on a fresh database.
    /// Retired keys are kept while a token they signed could still be valid
    /// (`max_token_lifetime` + leeway). Private keys are opened, and a new
    /// one sealed, with `sealer`.
    pub fn load(
        conn: &mut AnyConnection,
        sealer: &Sealer,
        now: NaiveDateTime,
        max_token_lifetime: Duration,
    ) -> anyhow::Result<Self> {
        let retired_after = now - max_token_lifetime - Duration::seconds(LEEWAY_SECS);
        let mut rows = SigningKeyRow::load_current(conn, sealer, retired_after)?;
        if !rows.iter().any(|r| r.retired_at.is_none()) {
            // Instances starting at once on an empty database take turns:
            // the first creates the key, the others find it (else each
            // would create one, and two keys would sign at once).
            crate::db::exclusively(conn, Exclusive::FirstSigningKey, |conn| {
                let rows = SigningKeyRow::load_current(conn, sealer, retired_after)?;
                if !rows.iter().any(|r| r.retired_at.is_none()) {
                    rotate(conn, sealer, now, false)?;
                }
                Ok(())
            })?;
            rows = SigningKeyRow::load_current(conn, sealer, retired_after)?;
        }
        Self::from_rows(&rows)
    }

    /// `rows` newest first (as `load_current` returns them).
    pub fn from_rows(rows: &[SigningKeyRow]) -> anyhow::Result<Self> {
        // The public key published and trusted is the private key's own:
        // the `public_jwk` column is not sealed, so a row whose JWK was
        // changed to someone else's key (or whose kid differs) is left out.
        let consistent = rows
            .iter()
            .filter(|r| r.algorithm == ALGORITHM)
            .filter_map(|row| match consistent_jwk(row) {
                Ok((jwk, signer)) => Some((row, jwk, signer)),
                Err(e) => {
                    log::error!("signing key {} left out: {e:#}", row.kid);
                    None
                }
            });
        let mut verifying = HashMap::new();
        let mut keys = Vec::new();
        // The newest key not retired signs.
        let mut active = None;
        for (row, jwk, signer) in consistent {
            verifying.insert(row.kid.clone(), DecodingKey::from_jwk(&jwk)?);
            keys.push(jwk);
            if active.is_none() && row.retired_at.is_none() {
                active = Some((row, signer));
            }
        }
        let (active, signer) = active.ok_or_else(|| anyhow::anyhow!("no active signing key"))?;
        Ok(Self {
            access_header: encoded_header(ACCESS_TOKEN_TYP, &active.kid)?,
            id_header: encoded_header(ID_TOKEN_TYP, &active.kid)?,
            signing_kid: active.kid.clone(),
            signing_created_at: active.created_at,
            signer,
            verifying,
            jwks: JwkSet { keys },
            verified: empty_verified(),
        })
    }

    /// Takes over what `older` has verified when both trust exactly the
    /// same public keys (same kids, same keys): a token verifies under this
    /// ring as it did under that one. A key added, revoked or dropped starts
    /// an empty map.
    pub fn keep_verified_of(&mut self, older: &KeyRing) {
        if self.jwks == older.jwks {
            self.verified = older.verified.clone();
        }
    }

    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// When the key that signs was made.
    pub fn signing_created_at(&self) -> NaiveDateTime {
        self.signing_created_at
    }

    /// The public keys (RFC 7517 JWK Set): never a private part.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Signs `claims`; the signature is always low-S (see [`has_low_s`]).
    pub fn sign(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        self.sign_under(&self.access_header, claims)
    }

    /// Signs an OpenID Connect ID token (`typ: JWT`, OIDC Core 2: never
    /// `at+jwt`, so an ID token never verifies as an access token, RFC 9068
    /// 4) with the same key and low-S signature.
    pub fn sign_id_token<C: Serialize>(&self, claims: &C) -> anyhow::Result<String> {
        self.sign_under(&self.id_header, claims)
    }

    /// RFC 7515 7.1 (JWS Compact Serialization): BASE64URL(header) "."
    /// BASE64URL(payload), signed as those bytes, then "." BASE64URL of the
    /// signature, the 64 bytes R || S of RFC 7518 3.4, made low-S.
    fn sign_under<C: Serialize>(&self, header: &str, claims: &C) -> anyhow::Result<String> {
        let mut token = String::with_capacity(512);
        token.push_str(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims)?, &mut token);
        let signed = self
            .signer
            .sign(&SystemRandom::new(), token.as_bytes())
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        let signature = Signature::from_slice(signed.as_ref())
            .map_err(|e| anyhow::anyhow!("the signer produced no ES256 signature: {e}"))?;
        // ECDSA signers (aws-lc's included) emit either form: low S only.
        let low = signature.normalize_s().unwrap_or(signature);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(low.to_bytes(), &mut token);
        Ok(token)
    }

    /// The checks before a signature is verified, shared by access tokens
    /// and ID token hints: the header parses, `typ` is one `typ_ok` takes,
    /// the algorithm is ES256 (pinned: `none`, HS256 signed with our public
    /// key or any other is refused), the signature low-S ([`has_low_s`]),
    /// and `kid` a key of the ring. That key.
    fn key_of(&self, token: &str, typ_ok: impl Fn(&str) -> bool) -> Result<&DecodingKey, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `alg: none` and unknown algorithms do not even parse.
            ErrorKind::Json(_) => JwtError::Algorithm,
            _ => JwtError::Malformed,
        })?;
        if !header.typ.as_deref().is_some_and(typ_ok) {
            return Err(JwtError::WrongType);
        }
        if header.alg != Algorithm::ES256 {
            return Err(JwtError::Algorithm);
        }
        if !has_low_s(token) {
            return Err(JwtError::Signature);
        }
        header
            .kid
            .as_deref()
            .and_then(|kid| self.verifying.get(kid))
            .ok_or(JwtError::UnknownKey)
    }

    /// Checks an `id_token_hint` (OIDC Core 3.1.2.1): an ID token this
    /// server signed (`typ: JWT`, so an access token, `at+jwt`, never
    /// passes), ES256 with a key of the ring, low-S, `iss` ours and `aud`
    /// the client the authorization request is from. Expiry is not checked:
    /// "the ID Token ... MAY be expired". Its `sub`.
    pub fn verify_id_token_hint(
        &self,
        token: &str,
        issuer: &str,
        client_id: &str,
    ) -> Result<String, JwtError> {
        let key = self.key_of(token, |typ| typ == ID_TOKEN_TYP)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[client_id]);
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        validation.validate_exp = false;
        #[derive(Deserialize)]
        struct Hint {
            sub: String,
            at_hash: String,
        }
        let data =
            jsonwebtoken::decode::<Hint>(token, key, &validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => JwtError::Signature,
                ErrorKind::InvalidIssuer => JwtError::Issuer,
                ErrorKind::InvalidAudience => JwtError::Audience,
                _ => JwtError::Claims,
            })?;
        // Every ID token of ours carries at_hash; an access token does not.
        if data.claims.at_hash.is_empty() {
            return Err(JwtError::Claims);
        }
        Ok(data.claims.sub)
    }

    /// Whether the token's header names a key of this ring (no signature
    /// check).
    pub fn knows_kid_of(&self, token: &str) -> bool {
        jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|h| h.kid)
            .is_some_and(|kid| self.verifying.contains_key(&kid))
    }

    /// [`KeyRing::verify`], remembering successes (see `verified`).
    pub fn verify_cached(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now: i64,
    ) -> Result<AccessClaims, JwtError> {
        let mut hash = Sha256::new();
        for part in [issuer, audience, token] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        // Before the map: a high-S twin must never be answered from it.
        if !has_low_s(token) {
            return Err(JwtError::Signature);
        }
        let key: [u8; 32] = hash.finalize().into();
        let shard = &self.verified[usize::from(key[0]) % SHARDS];
        let hit = shard.read().ok().and_then(|m| m.get(&key).cloned());
        if let Some(claims) = hit {
            if claims.exp + LEEWAY_SECS < now {
                return Err(JwtError::Expired);
            }
            return Ok(claims);
        }
        let claims = self.verify(token, issuer, audience, now)?;
        if let Ok(mut m) = shard.write() {
            if m.len() >= MAX_VERIFIED / SHARDS {
                m.clear();
            }
            m.insert(key, claims.clone());
        }
        Ok(claims)
    }

    /// Verifies an access token (RFC 9068 4): `typ` must be `at+jwt`, the
    /// `kid` one of ours, the algorithm ES256 (pinned per key: `none`, HS256
    /// signed with our public key, or any other algorithm is refused), the
    /// signature valid and low-S ([`has_low_s`]), `iss` and `aud` ours, and
    /// `exp` not past (with [`LEEWAY_SECS`]). `now` is seconds since the
    /// epoch.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now: i64,
    ) -> Result<AccessClaims, JwtError> {
        let key = self.key_of(token, |t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        })?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        // Expiry is checked below against the injected clock.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &validation).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature => JwtError::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => JwtError::Algorithm,
                ErrorKind::InvalidIssuer => JwtError::Issuer,
                ErrorKind::InvalidAudience => JwtError::Audience,
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => JwtError::Claims,
                _ => JwtError::Malformed,
            }
        })?;
        if data.claims.exp + LEEWAY_SECS < now {
            return Err(JwtError::Expired);
        }
        Ok(data.claims)
    }
}

/// The ES256 signature of a compact JWS (RFC 7518 3.4: "the JWS Signature
/// value MUST be a 64-octet sequence", R || S), decoded strictly (canonical
/// unpadded base64url only).
fn signature_of(token: &str) -> Option<Signature> {
    let (_, encoded) = token.rsplit_once('.')?;
    let raw = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    Signature::from_slice(&raw).ok()
}

/// Whether the token's ES256 signature has a low S (s <= n/2). ECDSA
/// verifies (r, s) and (r, n - s) alike, so without this every token has a
/// second spelling, a different string with the same claims and `jti`,
/// which defeats anything keyed on the token's bytes (the verification
/// cache, a deny list of token hashes). Our signatures are normalised to low
/// S when signed (`KeyRing::sign_under`); only low S is accepted (as BIP 62 does).
pub fn has_low_s(token: &str) -> bool {
    signature_of(token).is_some_and(|sig| sig.normalize_s().is_none())
}

/// The JOSE header of an ES256 token of type `typ` signed by key `kid`,
/// BASE64URL-encoded.
fn encoded_header(typ: &str, kid: &str) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some(typ.to_owned());
    header.kid = Some(kid.to_owned());
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_row_whose_public_jwk_is_not_its_private_keys_is_left_out() {
        let now = chrono::Utc::now().naive_utc();
        let real = generate_key(now).unwrap();
        let other = generate_key(now).unwrap();
        // The attacker's public key under the real row's kid and private key.
        let mut forged = other.clone();
        forged.kid = "forged-kid".into();
        let mut swapped: Jwk = serde_json::from_str(&other.public_jwk).unwrap();
        swapped.common.key_id = Some("forged-kid".into());
        forged.public_jwk = serde_json::to_string(&swapped).unwrap();
        forged.private_key = real.private_key.clone();
        forged.created_at = now + Duration::hours(1);
        // A JWK naming another kid is refused too.
        let mut renamed = generate_key(now).unwrap();
        renamed.kid = "renamed".into();
        let ring = KeyRing::from_rows(&[forged, renamed, real.clone()]).unwrap();
        assert_eq!(ring.signing_kid(), real.kid);
        let kids: Vec<_> = ring
            .jwks()
            .keys
            .iter()
            .map(|k| k.common.key_id.clone().unwrap())
            .collect();
        assert_eq!(kids, vec![real.kid.clone()]);
        assert!(KeyRing::from_rows(&[]).is_err());
    }
    use super::*;
    use chrono::DateTime;
    use jsonwebtoken::EncodingKey;

    const ISS: &str = "https://auth.example.com";
    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_reload_with_the_same_keys_keeps_what_was_verified_and_new_keys_do_not() {
        let row = generate_key(chrono::Utc::now().naive_utc()).unwrap();
        let older = KeyRing::from_rows(std::slice::from_ref(&row)).unwrap();
        let mut same = KeyRing::from_rows(std::slice::from_ref(&row)).unwrap();
        same.keep_verified_of(&older);
        assert!(Arc::ptr_eq(&same.verified, &older.verified));
        let other = generate_key(chrono::Utc::now().naive_utc()).unwrap();
        let mut rotated = KeyRing::from_rows(&[other, row]).unwrap();
        rotated.keep_verified_of(&older);
        assert!(!Arc::ptr_eq(&rotated.verified, &older.verified));
    }

    #[test]
    fn verify_cached_remembers_only_successes_and_rechecks_expiry() {
        let (ring, _) = ring();
        let claims = AccessClaims {
            iss: ISS.into(),
            sub: "user_1".into(),
            aud: ISS.into(),
            client_id: "client_1".into(),
            scope: "requests:read".into(),
            iat: NOW,
            exp: NOW + 3600,
            jti: "j".into(),
            grant_id: "g".into(),
        };
        let token = ring.sign(&claims).unwrap();
        assert_eq!(ring.verify_cached(&token, ISS, ISS, NOW).unwrap(), claims);
        assert_eq!(ring.verify_cached(&token, ISS, ISS, NOW).unwrap(), claims);
        // Another audience is another cache key: refused.
        assert!(ring
            .verify_cached(&token, ISS, "https://other", NOW)
            .is_err());
        // A hit still expires.
        assert_eq!(
            ring.verify_cached(&token, ISS, ISS, NOW + 3600 + LEEWAY_SECS + 1),
            Err(JwtError::Expired)
        );
        // A tampered token is verified (and refused), never served from the map.
        let mut bytes = token.clone().into_bytes();
        let i = bytes.len() - 10;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(ring.verify_cached(&tampered, ISS, ISS, NOW).is_err());
    }

    /// The same token with S replaced by n - S: a valid ECDSA signature of
    /// the same bytes.
    fn high_s_twin(token: &str) -> String {
        let (signed, _) = token.rsplit_once('.').unwrap();
        let sig = signature_of(token).unwrap();
        let (r, s) = sig.split_scalars();
        let twin = Signature::from_scalars(r, -s).unwrap();
        assert!(twin.normalize_s().is_some(), "the twin is high-S");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(twin.to_bytes()))
    }

    #[test]
    fn every_signature_is_low_s() {
        let (ring, _) = ring();
        for i in 0..200 {
            let mut c = claims();
            c.jti = format!("j{i}");
            let token = ring.sign(&c).unwrap();
            let sig = signature_of(&token).unwrap();
            assert!(sig.normalize_s().is_none(), "high S: {token}");
            assert_eq!(ring.verify(&token, ISS, ISS, NOW).unwrap(), c);
        }
    }

    #[test]
    fn the_high_s_twin_of_a_valid_token_is_refused_cached_or_not() {
        let (ring, row) = ring();
        let token = ring.sign(&claims()).unwrap();
        let twin = high_s_twin(&token);
        assert_ne!(twin, token);
        // The twin is a valid ECDSA signature: only the low-S rule refuses it.
        let key = DecodingKey::from_jwk(&serde_json::from_str(&row.public_jwk).unwrap()).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[ISS]);
        validation.validate_exp = false;
        assert!(jsonwebtoken::decode::<AccessClaims>(&twin, &key, &validation).is_ok());

        assert_eq!(ring.verify(&twin, ISS, ISS, NOW), Err(JwtError::Signature));
        assert_eq!(
            ring.verify_cached(&twin, ISS, ISS, NOW),
            Err(JwtError::Signature)
        );
        // Still refused once the original is in the verification cache.
        assert_eq!(ring.verify_cached(&token, ISS, ISS, NOW).unwrap(), claims());
        assert_eq!(
            ring.verify_cached(&twin, ISS, ISS, NOW),
            Err(JwtError::Signature)
        );
        assert_eq!(ring.verify(&twin, ISS, ISS, NOW), Err(JwtError::Signature));
    }

    #[test]
    fn a_signature_in_non_canonical_base64url_is_refused() {
        let (ring, _) = ring();
        let token = ring.sign(&claims()).unwrap();
        // 64 bytes are 86 characters; the last one carries 2 bits, its 4
        // low bits are zero. Setting one gives another spelling of the same
        // bytes to a lenient decoder.
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 1;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let value = alphabet.iter().position(|&c| c == bytes[last]).unwrap();
        assert_eq!(value & 0b1111, 0);
        bytes[last] = alphabet[value | 1];
        let respelled = String::from_utf8(bytes).unwrap();
        assert_eq!(
            ring.verify(&respelled, ISS, ISS, NOW),
            Err(JwtError::Signature)
        );
        assert!(ring.verify_cached(&respelled, ISS, ISS, NOW).is_err());
    }

    fn ring() -> (KeyRing, SigningKeyRow) {
        let now = DateTime::from_timestamp(NOW, 0).unwrap().naive_utc();
        let row = generate_key(now).unwrap();
        (KeyRing::from_rows(std::slice::from_ref(&row)).unwrap(), row)
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: ISS.into(),
            sub: "user_1".into(),
            aud: ISS.into(),
            client_id: "client_1".into(),
            scope: "requests:read".into(),
            iat: NOW,
            exp: NOW + 3600,
            jti: "j1".into(),
            grant_id: "g1".into(),
        }
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn signed_token_verifies_and_has_rfc9068_header() {
        let (ring, row) = ring();
        let token = ring.sign(&claims()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(row.kid.as_str()));
        assert_eq!(ring.verify(&token, ISS, ISS, NOW).unwrap(), claims());
    }

    #[test]
    fn tokens_are_signed_over_what_jsonwebtoken_would_sign() {
        // The signer is ours (the key parsed once); the signing input, header
        // and claims as serialised, is byte for byte jsonwebtoken's.
        let (ring, row) = ring();
        let key = EncodingKey::from_ec_der(&row.private_key);
        for (typ, token) in [
            (ACCESS_TOKEN_TYP, ring.sign(&claims()).unwrap()),
            (ID_TOKEN_TYP, ring.sign_id_token(&claims()).unwrap()),
        ] {
            let mut header = Header::new(Algorithm::ES256);
            header.typ = Some(typ.into());
            header.kid = Some(row.kid.clone());
            let theirs = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
            let input = |t: &str| t.rsplit_once('.').unwrap().0.to_owned();
            assert_eq!(input(&token), input(&theirs), "{typ}");
            let signature = URL_SAFE_NO_PAD
                .decode(token.rsplit_once('.').unwrap().1)
                .unwrap();
            assert_eq!(signature.len(), 64, "R || S (RFC 7518 3.4), not DER");
        }
    }

    #[test]
    fn jwks_has_public_parts_only() {
        let (ring, _) = ring();
        let json = serde_json::to_value(ring.jwks()).unwrap();
        let key = &json["keys"][0];
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert_eq!(key["alg"], "ES256");
        assert_eq!(key["use"], "sig");
        assert!(key.get("d").is_none());
    }

    #[test]
    fn expired_token_is_refused_after_the_leeway() {
        let (ring, _) = ring();
        let token = ring.sign(&claims()).unwrap();
        assert!(ring
            .verify(&token, ISS, ISS, NOW + 3600 + LEEWAY_SECS)
            .is_ok());
        assert_eq!(
            ring.verify(&token, ISS, ISS, NOW + 3600 + LEEWAY_SECS + 1),
            Err(JwtError::Expired)
        );
    }

    #[test]
    fn wrong_issuer_or_audience_is_refused() {
        let (ring, _) = ring();
        let token = ring.sign(&claims()).unwrap();
        assert_eq!(
            ring.verify(&token, "https://other", ISS, NOW),
            Err(JwtError::Issuer)
        );
        assert_eq!(
            ring.verify(&token, ISS, "https://other", NOW),
            Err(JwtError::Audience)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let (ring, row) = ring();
        let header = serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": row.kid});
        let token = format!(
            "{}.{}.",
            b64(&header),
            b64(&serde_json::to_value(claims()).unwrap())
        );
        assert_eq!(ring.verify(&token, ISS, ISS, NOW), Err(JwtError::Algorithm));
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        let (ring, row) = ring();
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(row.kid.clone());
        // The classic confusion attack: HMAC keyed with the published key.
        let token = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(row.public_jwk.as_bytes()),
        )
        .unwrap();
        assert_eq!(ring.verify(&token, ISS, ISS, NOW), Err(JwtError::Algorithm));
    }

    #[test]
    fn wrong_typ_and_unknown_kid_are_refused() {
        let (ring, row) = ring();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(row.kid.clone()); // typ stays "JWT"
        let encoding = EncodingKey::from_ec_der(&row.private_key);
        let token = jsonwebtoken::encode(&header, &claims(), &encoding).unwrap();
        assert_eq!(ring.verify(&token, ISS, ISS, NOW), Err(JwtError::WrongType));

        let (other, _) = self::ring();
        let foreign = other.sign(&claims()).unwrap();
        assert_eq!(
            ring.verify(&foreign, ISS, ISS, NOW),
            Err(JwtError::UnknownKey)
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let (ring, _) = ring();
        let token = ring.sign(&claims()).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut evil = claims();
        evil.scope = "admin".into();
        let payload = b64(&serde_json::to_value(evil).unwrap());
        parts[1] = &payload;
        assert_eq!(
            ring.verify(&parts.join("."), ISS, ISS, NOW),
            Err(JwtError::Signature)
        );
    }
}
