//! One engine under three protocols (docs/protocols.md §6, §7): an upload begun with the IETF
//! draft is continued with tus and the other way round, a simple-protocol upload is continued
//! with the draft, and the metadata the draft's creation carries is what tus and downloads see.
//! Every interop version served (3 to 8).

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::ietf::{Ietf, VERSIONS, field, integer};
use common::{OCTETS, TestServer, download, path_of, pattern, tus};
use reqwest::{Method, StatusCode};

const LENGTH: usize = 6000;
const FIRST: usize = 2500;

/// tus's `PATCH` of `body` at `offset`, with `Upload-Length` when given.
async fn tus_patch(
    server: &TestServer,
    path: &str,
    offset: usize,
    length: Option<usize>,
    body: &[u8],
) -> reqwest::Response {
    let mut request = tus(server, Method::PATCH, path)
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", OCTETS);
    if let Some(length) = length {
        request = request.header("Upload-Length", length.to_string());
    }
    request.body(body.to_vec()).send().await.unwrap()
}

#[tokio::test]
async fn an_upload_begun_with_the_draft_is_finished_with_tus() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let data = pattern(LENGTH, version.0);
        let stated = version.knows_length_and_limits();
        let path = ietf
            .start(stated.then_some(LENGTH as u64), &data[..FIRST])
            .await;
        let head = common::head(&server, &path).await;
        assert_eq!(head.status(), StatusCode::OK, "{version}");
        assert_eq!(integer(&head, "upload-offset"), Some(FIRST as u64));
        if stated {
            assert_eq!(integer(&head, "upload-length"), Some(LENGTH as u64));
        } else {
            assert_eq!(field(&head, "upload-defer-length").as_deref(), Some("1"));
        }
        // tus gives the length the draft's versions before 6 cannot.
        let length = (!stated).then_some(LENGTH);
        let rest = tus_patch(&server, &path, FIRST, length, &data[FIRST..]).await;
        assert_eq!(rest.status(), StatusCode::NO_CONTENT, "{version}");
        assert_eq!(integer(&rest, "upload-offset"), Some(LENGTH as u64));
        assert!(ietf.is_complete(&path).await, "{version}");
        assert_eq!(download(&server, &path).await, data, "{version}");
    }
}

#[tokio::test]
async fn an_upload_begun_with_tus_is_finished_with_the_draft() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let data = pattern(LENGTH, version.0 + 10);
        let created = tus(&server, Method::POST, "/files/")
            .header("Upload-Length", LENGTH.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let path = path_of(&created);
        let first = tus_patch(&server, &path, 0, None, &data[..FIRST]).await;
        assert_eq!(first.status(), StatusCode::NO_CONTENT);
        assert_eq!(ietf.offset(&path).await, FIRST as u64, "{version}");
        assert!(!ietf.is_complete(&path).await, "{version}");
        let rest = ietf.append(&path, FIRST as u64, true, &data[FIRST..]).await;
        assert_eq!(rest.status(), StatusCode::NO_CONTENT, "{version}");
        assert_eq!(version.says_complete(rest.headers()), Some(true));
        assert_eq!(common::offset(&server, &path).await, LENGTH as u64);
        assert_eq!(download(&server, &path).await, data, "{version}");
    }
}

#[tokio::test]
async fn a_simple_upload_is_finished_with_the_draft() {
    let server = TestServer::start().await;
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let data = pattern(LENGTH, version.0 + 20);
        let file_id = format!("engine-{}.bin-{LENGTH}-1700000000000", version.0);
        let first = server
            .client
            .post(server.url("/upload"))
            .header("X-File-Id", &file_id)
            .header("X-Start-Byte", "0")
            .header("X-File-Size", LENGTH.to_string())
            .body(data[..FIRST].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let path = field(&first, "location").expect("the upload's Location");
        assert_eq!(first.text().await.unwrap(), FIRST.to_string());

        assert_eq!(ietf.offset(&path).await, FIRST as u64, "{version}");
        let rest = ietf.append(&path, FIRST as u64, true, &data[FIRST..]).await;
        assert_eq!(rest.status(), StatusCode::NO_CONTENT, "{version}");
        let status = server
            .client
            .get(server.url("/status"))
            .header("X-File-Id", &file_id)
            .send()
            .await
            .unwrap();
        assert_eq!(status.status(), StatusCode::OK);
        assert_eq!(
            status.text().await.unwrap(),
            LENGTH.to_string(),
            "{version}"
        );
        assert_eq!(download(&server, &path).await, data, "{version}");
    }
}

/// The pairs of a tus `Upload-Metadata` value, values decoded.
fn metadata(value: &str) -> Vec<(String, Vec<u8>)> {
    value
        .split(',')
        .map(|pair| {
            let mut parts = pair.trim().splitn(2, ' ');
            let key = parts.next().unwrap().to_owned();
            let value = parts.next().map_or_else(Vec::new, |value| {
                STANDARD.decode(value).expect("base64 metadata")
            });
            (key, value)
        })
        .collect()
}

#[tokio::test]
async fn the_drafts_file_name_and_type_are_the_uploads_metadata() {
    let server = TestServer::start().await;
    let disposition = "inline; filename=\"fallback.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt";
    for version in VERSIONS {
        let ietf = Ietf::new(&server, version);
        let created = ietf
            .creation(true)
            .header("Content-Disposition", disposition)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body("bonjour")
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "{version}");
        let path = path_of(&created);
        let head = common::head(&server, &path).await;
        let pairs = metadata(&field(&head, "upload-metadata").expect("Upload-Metadata"));
        let value = |key: &str| {
            pairs
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| String::from_utf8(value.clone()).unwrap())
        };
        assert_eq!(value("filename").as_deref(), Some("été.txt"), "{version}");
        assert_eq!(
            value("filetype").as_deref(),
            Some("text/plain; charset=utf-8"),
            "{version}"
        );
        let downloaded = server.client.get(server.url(&path)).send().await.unwrap();
        assert_eq!(downloaded.status(), StatusCode::OK);
        let named = field(&downloaded, "content-disposition").unwrap();
        assert!(
            named.contains("filename*=UTF-8''%C3%A9t%C3%A9.txt"),
            "{version}: {named}"
        );
        assert_eq!(downloaded.bytes().await.unwrap(), &b"bonjour"[..]);
        // Appends carry content, not metadata: their media type is the protocol's.
        let later = ietf.start(None, b"").await;
        let appended = ietf.append(&later, 0, true, b"x").await;
        assert_eq!(appended.status(), StatusCode::NO_CONTENT);
        let head = common::head(&server, &later).await;
        let filetype = field(&head, "upload-metadata").unwrap_or_default();
        assert!(!filetype.contains("filetype"), "{version}: {filetype}");
    }
}
