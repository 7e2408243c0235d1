//! The Control UI at `/ui`: the built files of `control/ui` (`gateway.ui_dir`), served as they
//! are (the console calls the Gateway's own routes, same origin, with a bearer token). A
//! Gateway started before the UI was built answers `/ui` with a problem saying how to build it.

use std::path::Path;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use tower_http::services::ServeDir;

use crate::Gateway;
use crate::problem::Problem;

/// The routes under `/ui` for the UI built into `dir`.
pub(crate) fn router(dir: &Path) -> Router<Gateway> {
    let redirect = axum::routing::get(|| async { Redirect::permanent("/ui/") });
    if dir.join("index.html").is_file() {
        Router::new().route("/ui", redirect).nest_service(
            "/ui/",
            ServeDir::new(dir).append_index_html_on_directories(true),
        )
    } else {
        let missing = format!(
            "the Control UI is not built in {}: run `npm ci && npm run build` in control/ui \
             (or point the setting gateway.ui_dir at a built copy)",
            dir.display()
        );
        let answer = move || {
            let missing = missing.clone();
            async move {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "ui-not-built", missing)
                    .into_response()
            }
        };
        Router::new()
            .route("/ui", axum::routing::get(answer.clone()))
            .route("/ui/", axum::routing::get(answer.clone()))
            .route("/ui/{*path}", axum::routing::get(answer))
    }
}
