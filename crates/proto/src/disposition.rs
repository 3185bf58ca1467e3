//! `Content-Disposition: attachment` for downloads (RFC 6266 with RFC 8187 `filename*`).

/// The header value that makes a browser save the bytes as `filename`.
///
/// Only the last path component is used. `filename` carries an ASCII fallback (anything else
/// becomes `_`); `filename*` carries the exact UTF-8 name, percent-encoded.
pub fn attachment(filename: &str) -> String {
    let name = filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .trim();
    if name.is_empty() || name == "." || name == ".." {
        return "attachment".into();
    }
    let fallback: String = name
        .chars()
        .map(|character| match character {
            ' '..='~' if character != '"' && character != '\\' && character != '%' => character,
            _ => '_',
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for &byte in name.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ascii_names_pass_through() {
        assert_eq!(
            attachment("report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
    }

    #[test]
    fn other_names_are_encoded() {
        assert_eq!(
            attachment("фото \"1\".jpg"),
            "attachment; filename=\"____ _1_.jpg\"; \
             filename*=UTF-8''%D1%84%D0%BE%D1%82%D0%BE%20%221%22.jpg"
        );
    }

    #[test]
    fn paths_are_reduced_to_their_last_component() {
        assert!(attachment("../../etc/passwd").starts_with("attachment; filename=\"passwd\""));
        assert!(attachment("C:\\x\\y.txt").starts_with("attachment; filename=\"y.txt\""));
        assert_eq!(attachment("a/.."), "attachment");
        assert_eq!(attachment(""), "attachment");
    }

    proptest! {
        #[test]
        fn value_is_always_a_valid_header(name: String) {
            let value = attachment(&name);
            prop_assert!(value.bytes().all(|byte| (b' '..=b'~').contains(&byte)), "{}", value);
        }
    }
}
