//! Faults of the storage under a running server: 5xx with a clear message, never an answer
//! about the upload ("not found") that the storage cannot give.

mod common;

use common::{OCTETS, TestServer, path_of, tus};
use reqwest::{Method, StatusCode};

async fn simple_post(server: &TestServer, file_id: &str, start: &str) -> reqwest::Response {
    server
        .client
        .post(server.url("/upload"))
        .header("X-File-Id", file_id)
        .header("X-Start-Byte", start)
        .header("X-File-Size", "3")
        .body(if start == "0" { "ab" } else { "c" })
        .send()
        .await
        .unwrap()
}

async fn simple_status(server: &TestServer, file_id: &str) -> reqwest::Response {
    server
        .client
        .get(server.url("/status"))
        .header("X-File-Id", file_id)
        .send()
        .await
        .unwrap()
}

/// The answer of a store that cannot be reached: 503 (it may come back), and it says so.
async fn assert_unavailable(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    // A HEAD's answer has no body to say it in.
    if what != "HEAD" {
        let message = response.text().await.unwrap();
        assert!(message.contains("storage unavailable"), "{what}: {message}");
    }
}

/// The data dir removed under a running server: every request that needs the storage is a
/// 503, including those about uploads that existed: the server cannot tell that they are gone,
/// only that it cannot see its storage. Once the directory is back, requests succeed again.
#[tokio::test]
async fn a_data_dir_removed_under_the_server_is_503_never_404() {
    let server = TestServer::start().await;
    let created = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "3")
        .send()
        .await
        .unwrap();
    let path = path_of(&created);
    assert_eq!(
        simple_post(&server, "before-3-1", "0").await.status(),
        StatusCode::OK
    );

    std::fs::remove_dir_all(&server.data_dir).unwrap();

    let creation = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "3")
        .send()
        .await
        .unwrap();
    assert_unavailable(creation, "POST /files/").await;
    let head = tus(&server, Method::HEAD, &path).send().await.unwrap();
    assert_unavailable(head, "HEAD").await;
    let patch = tus(&server, Method::PATCH, &path)
        .header("Upload-Offset", "0")
        .header("Content-Type", OCTETS)
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_unavailable(patch, "PATCH").await;
    let download = server.client.get(server.url(&path)).send().await.unwrap();
    assert_unavailable(download, "GET /files/{id}").await;
    let delete = tus(&server, Method::DELETE, &path).send().await.unwrap();
    assert_unavailable(delete, "DELETE").await;
    assert_unavailable(
        simple_status(&server, "before-3-1").await,
        "GET /status, known",
    )
    .await;
    assert_unavailable(
        simple_status(&server, "never-3-1").await,
        "GET /status, unknown",
    )
    .await;
    assert_unavailable(
        simple_post(&server, "never-3-1", "0").await,
        "POST /upload, new",
    )
    .await;
    assert_unavailable(
        simple_post(&server, "before-3-1", "2").await,
        "POST /upload, resumed",
    )
    .await;
    assert!(server.service.remove_expired().await.is_err());

    // An operator puts the (empty) directory back: the server serves again, without a restart.
    std::fs::create_dir_all(server.data_dir.join("uploads")).unwrap();
    std::fs::create_dir_all(server.data_dir.join("keys")).unwrap();
    assert_eq!(head_status(&server, &path).await, StatusCode::NOT_FOUND);
    let again = tus(&server, Method::POST, "/files/")
        .header("Upload-Length", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(
        simple_status(&server, "before-3-1")
            .await
            .text()
            .await
            .unwrap(),
        "0"
    );
}

async fn head_status(server: &TestServer, path: &str) -> StatusCode {
    tus(server, Method::HEAD, path)
        .send()
        .await
        .unwrap()
        .status()
}
