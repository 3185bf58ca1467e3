//! Who a request acts for: the `--auth` modes.
//!
//! - [`Auth::None`]: everyone is the anonymous principal (the zero-config default).
//! - [`Auth::Jwt`]: `Authorization: Bearer <JWT>`, verified by `jsonwebtoken` with a shared
//!   secret (HS256) or a public key / JWKS (RS*, PS*, ES*, EdDSA). The algorithms a token may use
//!   follow from the key, never from the token, so `alg: none` and algorithm confusion (an
//!   HMAC token "signed" with the public key) are refused. `sub` is the owner; optional claims
//!   narrow what the token allows (see [`Claims`]).
//! - [`Auth::Tokens`]: static bearer tokens mapped to owners, from a file re-read when it
//!   changes (or on [`Authenticator::reload`], which the binary calls on `SIGHUP`).
//! - [`Auth::Forward`]: the request's `Authorization` and `Cookie` (plus method and path) go to an
//!   endpoint of the application, which names the owner or refuses; answers are cached briefly.
//!
//! Credentials are only ever compared or cached as SHA-256 digests and never logged.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use resumable_core::{Limits, Owner};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// The protocol front-ends a principal may be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrontEnd {
    /// The seed's `GET /status` and `POST /upload`.
    Simple,
    /// tus 1.0.0 on `/files/`.
    Tus,
    /// The IETF Resumable Uploads draft on `/files/`.
    Ietf,
}

impl fmt::Display for FrontEnd {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            FrontEnd::Simple => "the simple protocol",
            FrontEnd::Tus => "tus",
            FrontEnd::Ietf => "the IETF resumable upload draft",
        })
    }
}

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Who owns what this principal creates.
    pub owner: Owner,
    /// The principal's own limits, on top of the server's.
    pub limits: Limits,
    /// The front-ends it may use; `None` for all.
    pub front_ends: Option<Vec<FrontEnd>>,
}

impl Identity {
    fn of(owner: Owner) -> Self {
        Identity {
            owner,
            limits: Limits::default(),
            front_ends: None,
        }
    }
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials.
    Missing,
    /// Credentials that do not verify; the reason is for the client (it never echoes them).
    Invalid(String),
    /// The forward endpoint refused, with this status (401 or 403) and challenge.
    Refused {
        /// The endpoint's status.
        status: u16,
        /// The endpoint's `WWW-Authenticate`, if any.
        challenge: Option<String>,
    },
    /// The forward endpoint cannot be asked right now.
    Unavailable(String),
}

/// The `Authorization` and `Cookie` of a request, plus what the forward endpoint is told.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// `Authorization`, if given (once).
    pub authorization: Option<&'a [u8]>,
    /// `Cookie`, if given.
    pub cookie: Option<&'a [u8]>,
    /// The request's method.
    pub method: &'a str,
    /// The request's path and query.
    pub path: &'a str,
}

impl Credentials<'_> {
    /// The bearer token, if `Authorization` is `Bearer <token>`.
    fn bearer(&self) -> Result<&str, AuthError> {
        let value = self.authorization.ok_or(AuthError::Missing)?;
        let value = std::str::from_utf8(value)
            .map_err(|_| AuthError::Invalid("Authorization is not text".into()))?;
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Invalid(
                "Authorization must be \"Bearer <token>\"".into(),
            ));
        }
        Ok(token.trim())
    }
}

/// How requests are authenticated.
pub enum Auth {
    /// Nobody is asked for anything: everyone is the anonymous principal.
    None,
    /// JSON Web Tokens.
    Jwt(JwtAuth),
    /// Static tokens from a file.
    Tokens(TokensAuth),
    /// An endpoint of the application decides.
    Forward(ForwardAuth),
}

impl fmt::Debug for Auth {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.mode())
    }
}

impl Auth {
    /// The mode's name, as `--auth` spells it.
    pub fn mode(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Jwt(_) => "jwt",
            Auth::Tokens(_) => "tokens",
            Auth::Forward(_) => "forward",
        }
    }

    /// The principal the credentials stand for.
    pub async fn authenticate(&self, credentials: Credentials<'_>) -> Result<Identity, AuthError> {
        match self {
            Auth::None => Ok(Identity::of(Owner::anonymous())),
            Auth::Jwt(jwt) => jwt.verify(credentials.bearer()?),
            Auth::Tokens(tokens) => tokens.owner_of(credentials.bearer()?),
            Auth::Forward(forward) => forward.ask(credentials).await,
        }
    }

    /// Re-reads what the mode reads from files (the tokens file); other modes have nothing to
    /// re-read. Keeps the old set when the new one is unusable.
    pub fn reload(&self) -> Result<(), String> {
        match self {
            Auth::Tokens(tokens) => tokens.reload(),
            Auth::None | Auth::Jwt(_) | Auth::Forward(_) => Ok(()),
        }
    }
}

/// Claims of a token beyond the standard ones; each narrows what the token allows. (Forward
/// endpoints answer with the same fields, plus `owner`.)
#[derive(Debug, Deserialize)]
pub struct Claims {
    /// The owner.
    #[serde(default)]
    sub: Option<String>,
    /// The largest upload, in bytes.
    #[serde(default)]
    max_size: Option<u64>,
    /// The bytes the owner's uploads may hold together.
    #[serde(default)]
    quota_bytes: Option<u64>,
    /// The unfinished uploads the owner may have at once.
    #[serde(default)]
    quota_uploads: Option<u64>,
    /// The front-ends the token may use (`"tus"`, `"simple"`, `"ietf"`).
    #[serde(default)]
    protocols: Option<Vec<FrontEnd>>,
}

impl Claims {
    fn into_identity(self, owner: String) -> Identity {
        Identity {
            owner: Owner::new(owner),
            limits: Limits {
                max_size: self.max_size,
                quota_bytes: self.quota_bytes,
                quota_uploads: self.quota_uploads,
            },
            front_ends: self.protocols,
        }
    }
}

/// Where JWT verification keys come from.
#[derive(Debug, Clone)]
pub enum JwtKeySource {
    /// A shared secret (HS256/384/512), the file's bytes without trailing whitespace.
    SecretFile(PathBuf),
    /// A PEM public key: RSA, EC (P-256, P-384) or Ed25519.
    PublicKeyFile(PathBuf),
    /// A JSON Web Key Set; a token's `kid` picks the key.
    JwksFile(PathBuf),
}

/// Settings of [`Auth::Jwt`].
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The verification keys.
    pub keys: JwtKeySource,
    /// The issuer a token must name (`iss`), if any.
    pub issuer: Option<String>,
    /// The audience a token must name (`aud`), if any.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// One key a token may be signed with.
struct JwtKey {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

/// Verifies JSON Web Tokens.
pub struct JwtAuth {
    keys: Vec<JwtKey>,
}

impl JwtAuth {
    /// Loads the keys; an error names what is wrong with them.
    pub fn new(settings: &JwtSettings) -> Result<Self, String> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
        };
        let keys: Vec<(Option<String>, DecodingKey, Option<Algorithm>)> = match &settings.keys {
            JwtKeySource::SecretFile(path) => {
                let secret = read(path)?;
                let secret = secret.trim_ascii_end();
                if secret.len() < 32 {
                    return Err(format!(
                        "{}: a JWT secret must have at least 32 bytes",
                        path.display()
                    ));
                }
                let key = DecodingKey::from_secret(secret).map_err(|error| error.to_string())?;
                vec![(None, key, None)]
            }
            JwtKeySource::PublicKeyFile(path) => {
                let pem = read(path)?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .or_else(|_| DecodingKey::from_ec_pem(&pem))
                    .or_else(|_| DecodingKey::from_ed_pem(&pem))
                    .map_err(|_| {
                        format!(
                            "{}: not a PEM RSA, EC or Ed25519 public key",
                            path.display()
                        )
                    })?;
                vec![(None, key, None)]
            }
            JwtKeySource::JwksFile(path) => {
                let set: JwkSet = serde_json::from_slice(&read(path)?)
                    .map_err(|error| format!("{}: not a JWK set: {error}", path.display()))?;
                let mut keys = Vec::new();
                for jwk in &set.keys {
                    let key = DecodingKey::from_jwk(jwk)
                        .map_err(|error| format!("{}: unusable key: {error}", path.display()))?;
                    let algorithm = jwk
                        .common
                        .key_algorithm
                        .and_then(|algorithm| algorithm.to_string().parse::<Algorithm>().ok());
                    keys.push((jwk.common.key_id.clone(), key, algorithm));
                }
                if keys.is_empty() {
                    return Err(format!("{}: the JWK set has no keys", path.display()));
                }
                keys
            }
        };
        let keys = keys
            .into_iter()
            .map(|(kid, key, algorithm)| {
                // The key decides the algorithms, never the token's header.
                let mut validation = match algorithm {
                    Some(algorithm) => Validation::new(algorithm),
                    None => Validation::new_for_family(key.family()),
                };
                validation.leeway = settings.leeway.as_secs();
                validation.set_required_spec_claims(&["exp", "sub"]);
                if let Some(issuer) = &settings.issuer {
                    validation.set_issuer(&[issuer]);
                    validation.required_spec_claims.insert("iss".into());
                }
                match &settings.audience {
                    Some(audience) => {
                        validation.set_audience(&[audience]);
                        validation.required_spec_claims.insert("aud".into());
                    }
                    None => validation.validate_aud = false,
                }
                validation.validate_nbf = true;
                JwtKey {
                    kid,
                    key,
                    validation,
                }
            })
            .collect();
        Ok(JwtAuth { keys })
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("the token is not a JWT".into()))?;
        let candidates: Vec<&JwtKey> = match &header.kid {
            Some(kid) if self.keys.iter().any(|key| key.kid.as_ref() == Some(kid)) => self
                .keys
                .iter()
                .filter(|key| key.kid.as_ref() == Some(kid))
                .collect(),
            Some(_) if self.keys.iter().all(|key| key.kid.is_some()) => {
                return Err(AuthError::Invalid(
                    "the token's key (kid) is unknown".into(),
                ));
            }
            _ => self.keys.iter().collect(),
        };
        let mut last = AuthError::Invalid("the token does not verify".into());
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation) {
                Ok(data) => {
                    let claims = data.claims;
                    let Some(owner) = claims.sub.clone().filter(|sub| !sub.is_empty()) else {
                        return Err(AuthError::Invalid("the token has no subject (sub)".into()));
                    };
                    return Ok(claims.into_identity(owner));
                }
                Err(error) => last = AuthError::Invalid(jwt_reason(&error)),
            }
        }
        Err(last)
    }
}

/// What a client is told about a token that does not verify: enough to fix its side, nothing
/// about the server's keys.
fn jwt_reason(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted".into(),
        ErrorKind::InvalidAudience => "the token's audience is not accepted".into(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token lacks the {claim} claim"),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        _ => "the token does not verify".into(),
    }
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        // Lengths first, so ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// When a file was last seen, to tell whether it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    length: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: metadata.modified().ok(),
        length: metadata.len(),
    })
}

/// The tokens file, parsed: token digest → owner.
struct TokenSet {
    owners: HashMap<[u8; 32], Owner>,
    stamp: Option<FileStamp>,
}

/// Static bearer tokens from a file of `TOKEN OWNER` lines (`#` starts a comment).
pub struct TokensAuth {
    path: PathBuf,
    set: RwLock<TokenSet>,
    /// When the file's stamp was last compared: at most once a second, not on every request.
    checked: Mutex<Instant>,
}

/// How often [`TokensAuth`] looks whether its file changed.
const TOKENS_CHECK_EVERY: Duration = Duration::from_secs(1);

impl TokensAuth {
    /// Reads the tokens file; an error names the line that is wrong.
    pub fn new(path: PathBuf) -> Result<Self, String> {
        let set = read_tokens(&path)?;
        Ok(TokensAuth {
            path,
            set: RwLock::new(set),
            checked: Mutex::new(Instant::now()),
        })
    }

    /// Re-reads the file; the old tokens stay when the new file is unusable.
    pub fn reload(&self) -> Result<(), String> {
        let set = read_tokens(&self.path)?;
        let count = set.owners.len();
        *self
            .set
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = set;
        tracing::info!(tokens = count, file = %self.path.display(), "tokens file loaded");
        Ok(())
    }

    fn reload_if_changed(&self) {
        {
            let mut checked = self
                .checked
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if checked.elapsed() < TOKENS_CHECK_EVERY {
                return;
            }
            *checked = Instant::now();
        }
        let current = stamp(&self.path);
        let known = self
            .set
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .stamp;
        if current != known
            && let Err(error) = self.reload()
        {
            tracing::error!(%error, "tokens file unusable; keeping the previous tokens");
        }
    }

    fn owner_of(&self, token: &str) -> Result<Identity, AuthError> {
        self.reload_if_changed();
        let set = self.set.read().unwrap_or_else(|poison| poison.into_inner());
        set.owners
            .get(&digest(&[token.as_bytes()]))
            .map(|owner| Identity::of(owner.clone()))
            .ok_or_else(|| AuthError::Invalid("unknown token".into()))
    }
}

fn read_tokens(path: &Path) -> Result<TokenSet, String> {
    // The stamp is taken before reading: a change during the read shows up as a new stamp.
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let mut owners = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), number + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [token, owner] = fields[..] else {
            return Err(format!("{}: expected \"TOKEN OWNER\"", at()));
        };
        if owners
            .insert(digest(&[token.as_bytes()]), Owner::new(owner))
            .is_some()
        {
            return Err(format!("{}: the token is listed twice", at()));
        }
    }
    Ok(TokenSet { owners, stamp })
}

/// Settings of [`Auth::Forward`].
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// The application's endpoint.
    pub url: String,
    /// How long an answer is reused for the same credentials, method and path.
    pub cache_for: Duration,
    /// How long the endpoint may take to answer.
    pub timeout: Duration,
}

/// The most answers [`ForwardAuth`] keeps.
const FORWARD_CACHE_ENTRIES: usize = 10_000;

/// The owner header a forward endpoint may answer with.
pub const OWNER_HEADER: &str = "resumable-owner";

/// Asks an endpoint of the application who a request is.
pub struct ForwardAuth {
    settings: ForwardSettings,
    client: reqwest::Client,
    /// Answers by digest of (method, path, credentials), with when they came.
    cache: Mutex<HashMap<[u8; 32], (Instant, ForwardResult)>>,
}

/// What the forward endpoint answered.
type ForwardResult = Result<Identity, AuthError>;

/// A forward endpoint's JSON answer.
#[derive(Deserialize)]
struct ForwardAnswer {
    owner: String,
    #[serde(flatten)]
    claims: Claims,
}

impl ForwardAuth {
    /// An authenticator asking `settings.url`.
    pub fn new(settings: ForwardSettings) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|error| error.to_string())?;
        Ok(ForwardAuth {
            settings,
            client,
            cache: Mutex::default(),
        })
    }

    async fn ask(&self, credentials: Credentials<'_>) -> Result<Identity, AuthError> {
        if credentials.authorization.is_none() && credentials.cookie.is_none() {
            return Err(AuthError::Missing);
        }
        let key = digest(&[
            credentials.method.as_bytes(),
            credentials.path.as_bytes(),
            credentials.authorization.unwrap_or_default(),
            credentials.cookie.unwrap_or_default(),
        ]);
        if let Some(answer) = self.cached(&key) {
            return answer;
        }
        let answer = self.request(credentials).await;
        // An endpoint that is down is asked again next time, not remembered as a refusal.
        if !matches!(answer, Err(AuthError::Unavailable(_))) {
            self.remember(key, answer.clone());
        }
        answer
    }

    fn cached(&self, key: &[u8; 32]) -> Option<ForwardResult> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (at, answer) = cache.get(key)?;
        (at.elapsed() < self.settings.cache_for).then(|| answer.clone())
    }

    fn remember(&self, key: [u8; 32], answer: ForwardResult) {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if cache.len() >= FORWARD_CACHE_ENTRIES {
            let cache_for = self.settings.cache_for;
            cache.retain(|_, (at, _)| at.elapsed() < cache_for);
            if cache.len() >= FORWARD_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), answer));
    }

    async fn request(&self, credentials: Credentials<'_>) -> Result<Identity, AuthError> {
        let mut request = self
            .client
            .get(&self.settings.url)
            .header("x-forwarded-method", credentials.method)
            .header("x-forwarded-uri", credentials.path);
        if let Some(authorization) = credentials.authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(cookie) = credentials.cookie {
            request = request.header("cookie", cookie);
        }
        let unavailable = |error: reqwest::Error| {
            // Without the URL: it may hold credentials (user:password@).
            let error = error.without_url();
            tracing::warn!(%error, "authentication endpoint unavailable");
            AuthError::Unavailable("the authentication service is unavailable".into())
        };
        let response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            return Err(AuthError::Refused {
                status: status.as_u16(),
                challenge,
            });
        }
        if !status.is_success() {
            tracing::warn!(%status, "authentication endpoint failed");
            return Err(AuthError::Unavailable(
                "the authentication service failed".into(),
            ));
        }
        let header_owner = response
            .headers()
            .get(OWNER_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.map_err(unavailable)?;
        let answer = serde_json::from_slice::<ForwardAnswer>(&body).ok();
        match (header_owner, answer) {
            (_, Some(answer)) if !answer.owner.is_empty() => {
                Ok(answer.claims.into_identity(answer.owner))
            }
            (Some(owner), _) if !owner.is_empty() => Ok(Identity::of(Owner::new(owner))),
            _ => {
                tracing::warn!("authentication endpoint answered 2xx without an owner");
                Err(AuthError::Unavailable(
                    "the authentication service named no owner".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(authorization: Option<&str>) -> Credentials<'_> {
        Credentials {
            authorization: authorization.map(str::as_bytes),
            cookie: None,
            method: "HEAD",
            path: "/files/x",
        }
    }

    #[test]
    fn bearer_tokens_need_the_bearer_scheme() {
        assert_eq!(
            credentials(Some("Bearer abc")).bearer().unwrap(),
            "abc",
            "the token"
        );
        assert_eq!(credentials(Some("bearer  abc ")).bearer().unwrap(), "abc");
        assert_eq!(credentials(None).bearer(), Err(AuthError::Missing));
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc"] {
            assert!(
                matches!(credentials(Some(bad)).bearer(), Err(AuthError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tokens_files_name_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# comment\n\nt1 alice # trailing\nt2 bob\n").unwrap();
        let tokens = TokensAuth::new(path.clone()).unwrap();
        assert_eq!(tokens.owner_of("t1").unwrap().owner, Owner::new("alice"));
        assert_eq!(tokens.owner_of("t2").unwrap().owner, Owner::new("bob"));
        assert!(tokens.owner_of("t3").is_err());
        std::fs::write(&path, "t1 alice\nt2\n").unwrap();
        let error = TokensAuth::new(path.clone()).err().unwrap();
        assert!(error.contains("line 2"), "{error}");
        std::fs::write(&path, "t1 alice\nt1 bob\n").unwrap();
        let error = TokensAuth::new(path).err().unwrap();
        assert!(
            error.contains("line 2") && error.contains("twice"),
            "{error}"
        );
    }

    #[test]
    fn digests_keep_parts_apart() {
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
    }
}
