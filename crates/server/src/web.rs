//! The upload page and browser client, embedded in the binary so the server is one file.
//!
//! `web/` holds plain files with no build step: the page (`index.html`, `app.js`, `style.css`)
//! and `resumable.js`, the client library the page uses and other pages may import (CORS lets a
//! page on another origin load it as a module).

use crate::AppState;
use axum::Router;
use axum::http::header;
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

pub(crate) fn routes() -> Router<AppState> {
    ASSETS
        .into_iter()
        .fold(Router::new(), |router, (path, content_type, body)| {
            router.route(path, get(move || asset(content_type, body)))
        })
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Small files, fetched anew each time: a new binary must never meet an old client.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
