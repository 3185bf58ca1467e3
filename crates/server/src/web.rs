//! The upload page and browser client, embedded in the binary so the server is one file.
//!
//! `web/` holds plain files with no build step: the page (`index.html`, `app.js`, `style.css`)
//! and `resumable.js`, the client library the page uses and other pages may import (CORS lets a
//! page on another origin load it as a module).
//!
//! Every asset carries a `Content-Security-Policy` that allows only what the page uses: its own
//! scripts and style sheet, the `data:` favicon, and requests to this origin (plus the
//! `--public-url` origin, where upload URLs point); nothing inline, no frames around it. The
//! page copied to another site (its `resumable-server` meta tag naming this server) is served
//! by that site, with that site's headers: a CSP there must allow the upload server in
//! `connect-src`.

use crate::{AppState, PublicUrl};
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every asset: its path, its content type, and its bytes.
const ASSETS: [(&str, &str, &str); 5] = [
    ("/", HTML, include_str!("../../../web/index.html")),
    ("/index.html", HTML, include_str!("../../../web/index.html")),
    ("/app.js", JAVASCRIPT, include_str!("../../../web/app.js")),
    ("/style.css", CSS, include_str!("../../../web/style.css")),
    (
        "/resumable.js",
        JAVASCRIPT,
        include_str!("../../../web/resumable.js"),
    ),
];

pub(crate) fn routes(public_url: Option<&PublicUrl>) -> Router<AppState> {
    let policy = content_security_policy(public_url);
    ASSETS
        .into_iter()
        .fold(Router::new(), |router, (path, content_type, body)| {
            let policy = policy.clone();
            router.route(path, get(move || asset(content_type, body, policy)))
        })
}

/// The page's policy: `connect-src` is this origin, and the public URL's when there is one
/// (upload URLs point there even when the page was opened under another name).
fn content_security_policy(public_url: Option<&PublicUrl>) -> HeaderValue {
    let connect = match public_url {
        Some(public) => format!("'self' {}", public.origin()),
        None => "'self'".to_owned(),
    };
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).expect("a parsed origin is header-safe")
}

async fn asset(
    content_type: &'static str,
    body: &'static str,
    policy: HeaderValue,
) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Small files, fetched anew each time: a new binary must never meet an old client.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, policy),
            // Upload URLs (which may carry ids worth keeping private) never leak as a referrer.
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
}
