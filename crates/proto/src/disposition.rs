//! `Content-Disposition` (RFC 6266 with RFC 8187 `filename*`): the file name a client sends
//! with an upload (`inline`), and `attachment` for downloads.

/// The header value that makes a browser save the bytes as `filename`.
///
/// Only the last path component is used. `filename` carries an ASCII fallback (anything else
/// becomes `_`); `filename*` carries the exact UTF-8 name, percent-encoded.
pub fn attachment(filename: &str) -> String {
    with_filename("attachment", filename)
}

/// The header value an upload sends to name its file (the IETF resumable-upload draft's
/// creation request): `inline` with `filename` and `filename*` as in [`attachment`].
pub fn inline(filename: &str) -> String {
    with_filename("inline", filename)
}

/// `disposition` with the file name parameters; `disposition` alone when the name has no last
/// path component worth sending.
fn with_filename(disposition: &str, filename: &str) -> String {
    let name = filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .trim();
    if name.is_empty() || name == "." || name == ".." {
        return disposition.into();
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
    format!("{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// The file name a `Content-Disposition` value carries (any disposition type): `filename*`
/// (UTF-8, percent-encoded) when present and decodable, else `filename` (a token or a quoted
/// string). `None` when it names none. The name is the sender's; callers treat it as text,
/// never as a path.
pub fn filename(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let mut plain = None;
    let mut extended = None;
    // The disposition type comes first; the parameters follow, each after a `;`.
    let mut rest = text.split_once(';')?.1;
    while let Some((name, after)) = rest.split_once('=') {
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted)?,
            None => match after.split_once(';') {
                Some((token, next)) => (token.trim().to_owned(), next),
                None => (after.trim().to_owned(), ""),
            },
        };
        match name.as_str() {
            "filename" => plain = Some(value),
            "filename*" => extended = decode_extended(&value),
            _ => {}
        }
        rest = next.trim_start().strip_prefix(';').unwrap_or(next);
    }
    extended.or(plain).filter(|name| !name.is_empty())
}

/// A quoted string's text (after its opening quote) and what follows its closing quote.
fn unquote(quoted: &str) -> Option<(String, &str)> {
    let mut text = String::new();
    let mut characters = quoted.char_indices();
    while let Some((index, character)) = characters.next() {
        match character {
            '"' => return Some((text, &quoted[index + 1..])),
            '\\' => text.push(characters.next()?.1),
            other => text.push(other),
        }
    }
    None
}

/// An RFC 8187 `UTF-8''percent%20encoded` value (the language tag is ignored).
fn decode_extended(value: &str) -> Option<String> {
    let (charset, rest) = value.split_once('\'')?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let (_language, encoded) = rest.split_once('\'')?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut input = encoded.bytes();
    while let Some(byte) = input.next() {
        if byte == b'%' {
            let high = char::from(input.next()?).to_digit(16)?;
            let low = char::from(input.next()?).to_digit(16)?;
            bytes.push(u8::try_from(high * 16 + low).ok()?);
        } else {
            bytes.push(byte);
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_sent_with_uploads_are_read() {
        let both =
            br#"inline; filename="file name.jpg"; filename*=UTF-8''file%20name%20%E2%9C%93.jpg"#;
        assert_eq!(filename(both).as_deref(), Some("file name \u{2713}.jpg"));
        assert_eq!(
            filename(b"attachment; filename=plain.txt").as_deref(),
            Some("plain.txt")
        );
        assert_eq!(
            filename(br#"inline;filename="a \"b\".txt";size=3"#).as_deref(),
            Some(r#"a "b".txt"#)
        );
        // A broken `filename*` falls back to `filename`.
        assert_eq!(
            filename(b"inline; filename*=latin1''x; filename=y").as_deref(),
            Some("y")
        );
        for none in [
            &b"inline"[..],
            b"inline; size=3",
            b"inline; filename=\"",
            b"",
            b"inline; filename=\"\"",
        ] {
            assert_eq!(filename(none), None, "{:?}", String::from_utf8_lossy(none));
        }
    }

    #[test]
    fn attachment_names_read_back() {
        for name in [
            "report.pdf",
            "\u{444}\u{43e}\u{442}\u{43e} \"1\".jpg",
            "100%.txt",
        ] {
            assert_eq!(filename(attachment(name).as_bytes()).as_deref(), Some(name));
        }
    }

    #[test]
    fn inline_names_read_back() {
        for name in [
            "big.iso",
            "\u{444}\u{43e}\u{442}\u{43e} 100%.jpg",
            "a;b=\"c\".txt",
        ] {
            let value = inline(name);
            assert!(value.starts_with("inline; filename=\""), "{value}");
            assert_eq!(filename(value.as_bytes()).as_deref(), Some(name));
        }
        assert_eq!(
            inline("dir/report.pdf"),
            "inline; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        assert_eq!(inline(""), "inline");
        assert_eq!(inline("x/.."), "inline");
    }

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
        fn parsing_never_panics(value: Vec<u8>) {
            let _ = filename(&value);
        }

        #[test]
        fn value_is_always_a_valid_header(name: String) {
            for value in [attachment(&name), inline(&name)] {
                prop_assert!(value.bytes().all(|byte| (b' '..=b'~').contains(&byte)), "{}", value);
            }
        }
    }
}
