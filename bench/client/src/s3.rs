//! The direct baseline: the same bytes sent straight to an S3 endpoint, the way a good direct
//! uploader (`aws s3 cp`, rclone) sends them: multipart uploads whose parts go in parallel over
//! a pool of keep-alive connections. What our server achieves in front of the same store is
//! compared with this.
//!
//! Parts are signed with `UNSIGNED-PAYLOAD` by default, so the client hashes nothing it sends:
//! the figure is the store's and the network's, not the client's CPU. With
//! [`DirectPlan::sign_payloads`] each part's signature covers a SHA-256 of its bytes instead
//! (hashed before it is sent, as an SDK does), which the store then checks: the baseline for
//! a server that signs its parts.

use crate::body::{PatchBody, Pattern};
use crate::scenario::UploadReport;
use crate::tus::{Connection, Endpoint, TusError};
use http::{Method, Request, StatusCode, header};
use resumable_testkit::sigv4::{self, Signer, Unsigned};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// S3 refuses smaller parts (except an upload's last).
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// Where objects go, and how requests are signed.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// `http://IP:PORT`, path-style (`/BUCKET/KEY`).
    pub endpoint: Endpoint,
    /// The bucket's name.
    pub name: String,
    /// Signs with the key, for the endpoint's region.
    pub signer: Signer,
}

/// How many objects of which size [`upload_direct`] sends, and how.
#[derive(Clone, Debug)]
pub struct DirectPlan {
    /// Bytes per object.
    pub size: u64,
    /// How many objects.
    pub objects: usize,
    /// Bytes per part (the last part of an object may be shorter); at least [`MIN_PART_SIZE`].
    /// An object no larger is sent with one `PutObject`.
    pub part_size: u64,
    /// Parts in flight at once, over all objects: one keep-alive connection each.
    pub connections: usize,
    /// Keys are `PREFIX{n}`.
    pub prefix: String,
    /// Longest the whole run may take.
    pub deadline: Duration,
    /// Sign each part's bytes (a SHA-256 in the signature) rather than `UNSIGNED-PAYLOAD`.
    pub sign_payloads: bool,
}

/// One request's worth of work for a connection of the pool.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// Send object `object` whole with `PutObject`.
    Put { object: usize },
    /// Send part `part` (from 0) of object `object`; its multipart upload exists.
    Part { object: usize, part: usize },
}

/// A multipart upload in progress: its id, and the parts' ETags as they come back.
#[derive(Debug)]
struct Multipart {
    upload_id: String,
    etags: Mutex<Vec<Option<String>>>,
    parts_left: AtomicUsize,
}

/// What the connections share.
struct Run {
    bucket: Bucket,
    pattern: Pattern,
    plan: DirectPlan,
    jobs: Mutex<VecDeque<Job>>,
    /// Per object, once created (empty for objects sent with one `PutObject`).
    multiparts: Vec<Option<Multipart>>,
    /// Bytes of parts and objects the store answered 200 for.
    acknowledged: AtomicU64,
    completed: AtomicUsize,
}

/// Sends `plan.objects` objects of `plan.size` bytes, `plan.connections` requests at a time,
/// and reports like a tus run does: bytes the store acknowledged, wall time from the first
/// request (the creations included) to the last object completed and checked with `HEAD`.
pub async fn upload_direct(bucket: &Bucket, pattern: &Pattern, plan: DirectPlan) -> UploadReport {
    let started = Instant::now();
    let mut report = UploadReport::default();
    let run = match prepare(bucket, pattern, &plan).await {
        Ok(run) => Arc::new(run),
        Err(error) => {
            report.errors = plan.objects;
            report.first_error = Some(format!("creating the multipart uploads: {error}"));
            return report;
        }
    };
    let mut connections = JoinSet::new();
    for _ in 0..plan.connections.max(1) {
        let run = run.clone();
        connections.spawn(async move { run.work().await });
    }
    let mut first_error = None;
    let all = async {
        while let Some(outcome) = connections.join_next().await {
            if let Err(error) = outcome.expect("connection task panicked") {
                first_error.get_or_insert(error.to_string());
            }
        }
    };
    if timeout(plan.deadline, all).await.is_err() {
        first_error.get_or_insert(format!("unfinished after {:?}", plan.deadline));
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.bytes = run.acknowledged.load(Ordering::Relaxed);
    report.completed = run.completed.load(Ordering::Relaxed);
    report.errors = plan.objects - report.completed;
    report.first_error = first_error.filter(|_| report.errors > 0);
    report
}

/// Creates every object's multipart upload (over the pool's width of connections) and queues
/// the parts, object after object, as a sequential uploader of many files would.
async fn prepare(bucket: &Bucket, pattern: &Pattern, plan: &DirectPlan) -> Result<Run, TusError> {
    let part_size = plan.part_size.max(MIN_PART_SIZE);
    let plan = DirectPlan {
        part_size,
        ..plan.clone()
    };
    let multipart = plan.size > part_size;
    let mut multiparts: Vec<Option<Multipart>> = (0..plan.objects).map(|_| None).collect();
    let mut jobs = VecDeque::new();
    if multipart {
        let parts = plan.size.div_ceil(part_size) as usize;
        let created = create_all(bucket, &plan).await?;
        for (object, upload_id) in created.into_iter().enumerate() {
            multiparts[object] = Some(Multipart {
                upload_id,
                etags: Mutex::new(vec![None; parts]),
                parts_left: AtomicUsize::new(parts),
            });
            jobs.extend((0..parts).map(|part| Job::Part { object, part }));
        }
    } else {
        jobs.extend((0..plan.objects).map(|object| Job::Put { object }));
    }
    Ok(Run {
        bucket: bucket.clone(),
        pattern: pattern.clone(),
        plan,
        jobs: Mutex::new(jobs),
        multiparts,
        acknowledged: AtomicU64::new(0),
        completed: AtomicUsize::new(0),
    })
}

/// `CreateMultipartUpload` for every object, the pool's width at a time; the upload ids in
/// object order.
async fn create_all(bucket: &Bucket, plan: &DirectPlan) -> Result<Vec<String>, TusError> {
    let next = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(vec![String::new(); plan.objects]));
    let mut creators = JoinSet::new();
    for _ in 0..plan.connections.clamp(1, plan.objects.max(1)) {
        let (bucket, next, ids) = (bucket.clone(), next.clone(), ids.clone());
        let (objects, prefix) = (plan.objects, plan.prefix.clone());
        creators.spawn(async move {
            let mut connection = bucket.endpoint.connect().await?;
            loop {
                let object = next.fetch_add(1, Ordering::Relaxed);
                if object >= objects {
                    return Ok::<_, TusError>(());
                }
                let key = format!("{prefix}{object}");
                let id = create(&bucket, &mut connection, &key).await?;
                ids.lock().expect("not poisoned")[object] = id;
            }
        });
    }
    while let Some(outcome) = creators.join_next().await {
        outcome.expect("creation task panicked")?;
    }
    let ids = std::mem::take(&mut *ids.lock().expect("not poisoned"));
    Ok(ids)
}

impl Run {
    /// One connection's loop: take the next job until none is left.
    async fn work(&self) -> Result<(), TusError> {
        let mut connection = self.bucket.endpoint.connect().await?;
        loop {
            let job = self.jobs.lock().expect("not poisoned").pop_front();
            match job {
                None => return Ok(()),
                Some(Job::Put { object }) => {
                    let size = self.plan.size;
                    self.send(&mut connection, object, &[], size).await?;
                    self.acknowledged.fetch_add(size, Ordering::Relaxed);
                    self.check(&mut connection, object).await?;
                }
                Some(Job::Part { object, part }) => {
                    self.part(&mut connection, object, part).await?;
                }
            }
        }
    }

    /// Sends one part; the connection that sends an object's last part also completes it.
    async fn part(
        &self,
        connection: &mut Connection,
        object: usize,
        part: usize,
    ) -> Result<(), TusError> {
        let multipart = self.multiparts[object].as_ref().expect("created");
        let offset = part as u64 * self.plan.part_size;
        let len = self.plan.part_size.min(self.plan.size - offset);
        let number = (part + 1).to_string();
        let query = [
            ("partNumber", number.as_str()),
            ("uploadId", &multipart.upload_id),
        ];
        let etag = self.send(connection, object, &query, len).await?;
        self.acknowledged.fetch_add(len, Ordering::Relaxed);
        multipart.etags.lock().expect("not poisoned")[part] = Some(etag);
        if multipart.parts_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.complete(connection, object, multipart).await?;
            self.check(connection, object).await?;
        }
        Ok(())
    }

    /// A `PUT` of `len` bytes of the pattern to the object's key (a part, with `query`, or the
    /// whole object); the ETag it answered.
    async fn send(
        &self,
        connection: &mut Connection,
        object: usize,
        query: &[(&str, &str)],
        len: u64,
    ) -> Result<String, TusError> {
        let length = len.to_string();
        let path = self.key_path(object);
        let payload = if self.plan.sign_payloads {
            self.pattern.sha256_hex(len)
        } else {
            sigv4::UNSIGNED_PAYLOAD.to_owned()
        };
        let request = signed(
            &self.bucket,
            Method::PUT,
            &path,
            query,
            &[("content-length", &length)],
            &payload,
        )
        .body(PatchBody::stream(&self.pattern, len))
        .expect("valid request");
        let headers = connection.exchange(request, StatusCode::OK).await?;
        headers
            .get(header::ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or(TusError::MissingHeader {
                method: Method::PUT,
                header: "ETag",
            })
    }

    async fn complete(
        &self,
        connection: &mut Connection,
        object: usize,
        multipart: &Multipart,
    ) -> Result<(), TusError> {
        let listed: String = {
            let etags = multipart.etags.lock().expect("not poisoned");
            etags
                .iter()
                .enumerate()
                .map(|(index, etag)| {
                    let etag = etag.as_deref().unwrap_or_default();
                    format!(
                        "<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag></Part>",
                        index + 1
                    )
                })
                .collect()
        };
        let body = format!("<CompleteMultipartUpload>{listed}</CompleteMultipartUpload>");
        let length = body.len().to_string();
        let request = signed(
            &self.bucket,
            Method::POST,
            &self.key_path(object),
            &[("uploadId", &multipart.upload_id)],
            &[("content-length", &length)],
            &sigv4::sha256_hex(body.as_bytes()),
        )
        .body(PatchBody::bytes(body.into()))
        .expect("valid request");
        let (_, answer) = connection
            .exchange_with_body(request, StatusCode::OK)
            .await?;
        // S3 may answer 200 and put the error in the body.
        let answer = String::from_utf8_lossy(&answer);
        if !answer.contains("CompleteMultipartUploadResult") {
            return Err(TusError::Status {
                method: Method::POST,
                status: StatusCode::OK,
                body: answer.chars().take(200).collect(),
            });
        }
        Ok(())
    }

    /// `HEAD`s the object: it must exist with the whole size. Then it counts as completed.
    async fn check(&self, connection: &mut Connection, object: usize) -> Result<(), TusError> {
        let request = signed(
            &self.bucket,
            Method::HEAD,
            &self.key_path(object),
            &[],
            &[],
            &sigv4::sha256_hex(b""),
        )
        .body(PatchBody::Empty)
        .expect("valid request");
        let headers = connection.exchange(request, StatusCode::OK).await?;
        let stored = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if stored != Some(self.plan.size) {
            return Err(TusError::Status {
                method: Method::HEAD,
                status: StatusCode::OK,
                body: format!("stored {stored:?} bytes, expected {}", self.plan.size),
            });
        }
        self.completed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn key_path(&self, object: usize) -> String {
        format!("/{}/{}{object}", self.bucket.name, self.plan.prefix)
    }
}

/// `CreateMultipartUpload` of `key`; its upload id.
async fn create(
    bucket: &Bucket,
    connection: &mut Connection,
    key: &str,
) -> Result<String, TusError> {
    let path = format!("/{}/{key}", bucket.name);
    let request = signed(
        bucket,
        Method::POST,
        &path,
        &[("uploads", "")],
        &[("content-length", "0")],
        &sigv4::sha256_hex(b""),
    )
    .body(PatchBody::Empty)
    .expect("valid request");
    let (_, answer) = connection
        .exchange_with_body(request, StatusCode::OK)
        .await?;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_once("<UploadId>")
        .and_then(|(_, rest)| rest.split_once("</UploadId>"))
        .map(|(id, _)| id.to_owned())
        .ok_or_else(|| TusError::Status {
            method: Method::POST,
            status: StatusCode::OK,
            body: format!(
                "no UploadId in {}",
                answer.chars().take(200).collect::<String>()
            ),
        })
}

/// A request to `path?query` with `headers`, signed now.
fn signed(
    bucket: &Bucket,
    method: Method,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
    payload_sha256: &str,
) -> http::request::Builder {
    let host = bucket.endpoint.authority();
    let unsigned = Unsigned {
        method: method.as_str(),
        host,
        path,
        query,
        headers,
        payload_sha256,
    };
    let mut target = sigv4::encode_path(path);
    if !query.is_empty() {
        target = format!("{target}?{}", sigv4::canonical_query(query));
    }
    let signature = bucket.signer.sign(&unsigned, SystemTime::now());
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(target)
        .header(header::HOST, host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    for (name, value) in signature {
        builder = builder.header(name, value);
    }
    builder
}
