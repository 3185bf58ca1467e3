//! AWS Signature Version 4 for S3 requests (the `Authorization` header form), so tests and the
//! benchmark can talk to Garage, which checks signatures, without an SDK.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

/// The payload hash that signs the headers but not the body: the body can then be streamed
/// without reading it twice. S3, Garage and moto accept it on plain HTTP too.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// A request to sign: everything the signature covers.
#[derive(Clone, Copy, Debug)]
pub struct Unsigned<'a> {
    /// `GET`, `PUT`, …
    pub method: &'a str,
    /// The `Host` header's value, as sent.
    pub host: &'a str,
    /// The path, not yet percent-encoded (`/bucket/some key`).
    pub path: &'a str,
    /// Query parameters, not yet percent-encoded; a flag like `?uploads` is `("uploads", "")`.
    pub query: &'a [(&'a str, &'a str)],
    /// Other headers to sign (besides `host`, `x-amz-date` and `x-amz-content-sha256`).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body's SHA-256 in hex, or [`UNSIGNED_PAYLOAD`].
    pub payload_sha256: &'a str,
}

/// Signs requests with one key, for one region, for the `s3` service.
#[derive(Clone, Debug)]
pub struct Signer {
    access_key_id: String,
    secret_access_key: String,
    region: String,
}

impl Signer {
    /// A signer for `region` (Garage's is whatever its config says; ours is `garage`).
    pub fn new(access_key_id: &str, secret_access_key: &str, region: &str) -> Self {
        Signer {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            region: region.into(),
        }
    }

    /// The headers to add to `request` sent at `time`: `x-amz-date`, `x-amz-content-sha256`
    /// and `authorization`. The request must also carry the signed `headers` as given, and its
    /// path and query encoded as [`encode_path`] and [`encode`] do.
    pub fn sign(&self, request: &Unsigned<'_>, time: SystemTime) -> Vec<(&'static str, String)> {
        let stamp = amz_date(time);
        let day = &stamp[..8];
        let mut headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
            .chain([
                ("host".to_owned(), request.host.to_owned()),
                (
                    "x-amz-content-sha256".to_owned(),
                    request.payload_sha256.into(),
                ),
                ("x-amz-date".to_owned(), stamp.clone()),
            ])
            .collect();
        headers.sort();
        let signed_headers = headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let canonical_headers: String = headers
            .iter()
            .map(|(name, value)| format!("{name}:{value}\n"))
            .collect();
        let canonical_request = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
            request.method,
            encode_path(request.path),
            canonical_query(request.query),
            request.payload_sha256
        );
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let key = [day, &self.region, "s3", "aws4_request"].iter().fold(
            format!("AWS4{}", self.secret_access_key).into_bytes(),
            |key, part| hmac(&key, part.as_bytes()),
        );
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        vec![
            ("x-amz-date", stamp),
            ("x-amz-content-sha256", request.payload_sha256.to_owned()),
            (
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, \
                     Signature={signature}",
                    self.access_key_id
                ),
            ),
        ]
    }
}

/// The query string as signed and as it must be sent: encoded pairs sorted by name.
pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(name, value)| (encode(name), encode(value)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but S3's unreserved characters (`A-Za-z0-9-_.~`).
pub fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// [`encode`] for a path: the slashes between segments stay.
pub fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// `time` as SigV4 writes it: `YYYYMMDDTHHMMSSZ`, UTC.
pub fn amz_date(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`, for days
/// on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn dates_are_utc_in_sigv4_form() {
        assert_eq!(amz_date(at(0)), "19700101T000000Z");
        assert_eq!(amz_date(at(1_369_353_600)), "20130524T000000Z");
        // A leap day, and the last second of a year.
        assert_eq!(amz_date(at(951_782_400)), "20000229T000000Z");
        assert_eq!(amz_date(at(1_609_459_199)), "20201231T235959Z");
    }

    #[test]
    fn the_documented_get_object_example_signs_alike() {
        // AWS's example "GET Object" of the S3 SigV4 header-based authentication docs.
        let signer = Signer::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
        );
        let request = Unsigned {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: &[],
            headers: &[("Range", "bytes=0-9")],
            payload_sha256: &sha256_hex(b""),
        };
        let headers = signer.sign(&request, at(1_369_353_600));
        let authorization = &headers[2].1;
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn queries_are_encoded_and_sorted() {
        assert_eq!(
            canonical_query(&[("uploadId", "a b/c"), ("partNumber", "2")]),
            "partNumber=2&uploadId=a%20b%2Fc"
        );
        assert_eq!(canonical_query(&[("uploads", "")]), "uploads=");
        assert_eq!(encode_path("/bucket/a b~"), "/bucket/a%20b~");
    }
}
