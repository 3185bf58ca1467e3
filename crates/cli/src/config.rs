//! `resumable serve --config FILE` and `--print-config`, generic over the flags clap knows: a
//! flag added to `serve` is a config key and a printed setting without any code here.
//!
//! A key is a flag's long name without the dashes (`max-size = "1MiB"`). The command line is
//! parsed first; each file key whose flag neither the command line nor its `RESUMABLE_*`
//! variable gave is then added as `--key=value` and everything is parsed again, so a file value
//! goes through the flag's own value parser, conflicts and all: flags > env > file > defaults.

use clap::builder::ValueParser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The subcommand a config file configures.
const SUBCOMMAND: &str = "serve";
/// The ids (field names) of the flags about the config itself, which a file cannot set.
const CONFIG: &str = "config";
const PRINT_CONFIG: &str = "print_config";

/// Parts of a flag's name that say its value is itself a credential (unless it is a path).
const SECRET_WORDS: [&str; 6] = [
    "secret",
    "password",
    "passwd",
    "token",
    "credential",
    "api-key",
];
/// Query parameters of a URL whose values are credentials (signed URLs, API keys).
const SECRET_PARAMETERS: [&str; 7] = [
    "token",
    "secret",
    "password",
    "sig",
    "key",
    "auth",
    "credential",
];
/// What a masked value shows instead.
pub(crate) const MASK: &str = "***";

/// The command line, with the config file's settings applied.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// What clap parsed, file settings included.
    pub(crate) matches: ArgMatches,
    /// The effective configuration as TOML, when `--print-config` asked for it.
    pub(crate) printed: Option<String>,
}

/// Why the command line and config file give no configuration.
#[derive(Debug)]
pub(crate) enum Error {
    /// A command-line or environment mistake (or `--help`), as clap reports it.
    Clap(clap::Error),
    /// A config file that cannot be read or holds a bad setting: the message says which.
    Config(String),
}

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Flag,
    Env,
    File,
    Default,
    Unset,
}

/// Parses `args` against `command`; for `serve --config FILE`, applies FILE's settings where
/// neither a flag nor an environment variable gave one.
pub(crate) fn resolve(
    command: Command,
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> Result<Resolved, Error> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = command;
    command.build();
    let first = command
        .clone()
        .try_get_matches_from(&args)
        .map_err(Error::Clap)?;
    let Some(serve_matches) = first.subcommand_matches(SUBCOMMAND) else {
        return Ok(Resolved {
            matches: first,
            printed: None,
        });
    };
    let serve = command
        .find_subcommand(SUBCOMMAND)
        .expect("the serve subcommand exists")
        .clone();
    let config = serve_matches.get_one::<PathBuf>(CONFIG).cloned();
    let print = serve_matches.get_flag(PRINT_CONFIG);
    let mut from_file = Vec::new();
    let matches = match &config {
        None => first,
        Some(path) => {
            let table = read(path)?;
            let mut extra = Vec::new();
            for (key, value) in &table {
                let arg = find_key(&serve, key).map_err(|message| in_file(path, &message))?;
                if matches!(
                    serve_matches.value_source(arg.get_id().as_str()),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                ) {
                    continue;
                }
                let pieces = arguments(arg, key, value)
                    .map_err(|reason| in_file(path, &format!("`{key}`: {reason}")))?;
                check_value(&serve, arg, key, &pieces)
                    .map_err(|message| in_file(path, &message))?;
                from_file.push(arg.get_id().as_str().to_owned());
                extra.extend(pieces);
            }
            let all = args
                .iter()
                .cloned()
                .chain(extra.into_iter().map(OsString::from));
            command.try_get_matches_from(all).map_err(|error| {
                in_file(
                    path,
                    &format!("its settings with the command line: {}", first_line(&error)),
                )
            })?
        }
    };
    let printed = print.then(|| {
        let serve_matches = matches
            .subcommand_matches(SUBCOMMAND)
            .expect("parsed as serve again");
        render(&serve, serve_matches, &from_file, config.as_deref())
    });
    Ok(Resolved { matches, printed })
}

fn in_file(path: &Path, message: &str) -> Error {
    Error::Config(format!("config file {}: {message}", path.display()))
}

fn read(path: &Path) -> Result<toml::Table, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| in_file(path, &format!("cannot read it: {error}")))?;
    text.parse::<toml::Table>()
        .map_err(|error| in_file(path, &format!("not valid TOML: {}", error.message().trim())))
}

/// Whether `arg` is a setting a file may hold and `--print-config` shows: a flag with a long
/// name, other than help, version and the config flags themselves.
fn configurable(arg: &Arg) -> bool {
    arg.get_long().is_some()
        && ![CONFIG, PRINT_CONFIG].contains(&arg.get_id().as_str())
        && !matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
}

/// The flag a key names; an unknown key is an error naming it and the closest flag.
fn find_key<'a>(serve: &'a Command, key: &str) -> Result<&'a Arg, String> {
    let found = serve
        .get_arguments()
        .find(|arg| arg.get_long() == Some(key));
    match found {
        Some(arg) if configurable(arg) => Ok(arg),
        Some(_) => Err(format!("`{key}` cannot be set in a config file")),
        None => {
            let closest = serve
                .get_arguments()
                .filter(|arg| configurable(arg))
                .filter_map(Arg::get_long)
                .map(|long| (distance(key, long), long))
                .min()
                .filter(|(distance, _)| *distance <= 3.max(key.len() / 3));
            let hint = match closest {
                Some((_, long)) => format!("; did you mean `{long}`?"),
                None => String::new(),
            };
            Err(format!("unknown key `{key}`{hint}"))
        }
    }
}

/// The Levenshtein distance of two short names.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A file value as command-line arguments (`--key=value`, repeated for a list of a repeatable
/// flag); an error says what type the key takes.
fn arguments(arg: &Arg, key: &str, value: &toml::Value) -> Result<Vec<String>, String> {
    let flag = format!("--{key}");
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            let toml::Value::Boolean(on) = value else {
                return Err(format!("expected true or false, found {}", kind(value)));
            };
            let given = matches!(arg.get_action(), ArgAction::SetTrue) == *on;
            Ok(if given { vec![flag] } else { Vec::new() })
        }
        ArgAction::Count => match value {
            toml::Value::Integer(count) if *count >= 0 => Ok(vec![flag; *count as usize]),
            _ => Err(format!(
                "expected a count (0 or more), found {}",
                kind(value)
            )),
        },
        ArgAction::Append => match value {
            toml::Value::Array(items) => items
                .iter()
                .map(|item| scalar(item).map(|text| format!("{flag}={text}")))
                .collect(),
            other => Ok(vec![format!("{flag}={}", scalar(other)?)]),
        },
        _ => match value {
            // A list for a flag that takes one value: its own comma syntax (`a,b`).
            toml::Value::Array(items) => {
                let delimiter = arg.get_value_delimiter().unwrap_or(',').to_string();
                let items = items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
                Ok(vec![format!("{flag}={}", items.join(&delimiter))])
            }
            other => Ok(vec![format!("{flag}={}", scalar(other)?)]),
        },
    }
}

/// A string, an integer or a boolean, as the flag would take it.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(number) => Ok(number.to_string()),
        toml::Value::Boolean(on) => Ok(on.to_string()),
        other => Err(format!(
            "expected a string, an integer or a boolean, found {}",
            kind(other)
        )),
    }
}

fn kind(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

/// Runs one key's arguments through its flag's value parser alone, so that a bad value is
/// reported as the file's key (with its reason), not as a flag nobody typed.
fn check_value(serve: &Command, arg: &Arg, key: &str, pieces: &[String]) -> Result<(), String> {
    let args = std::iter::once(SUBCOMMAND.to_owned()).chain(pieces.iter().cloned());
    let Err(error) = serve.clone().try_get_matches_from(args) else {
        return Ok(());
    };
    let secret = is_secret(arg);
    let reason = match error.kind() {
        ErrorKind::ValueValidation => std::error::Error::source(&error).map(ToString::to_string),
        ErrorKind::InvalidValue => match error.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) => {
                Some(format!("expected one of {}", valid.join(", ")))
            }
            _ => None,
        },
        ErrorKind::WrongNumberOfValues | ErrorKind::TooManyValues | ErrorKind::InvalidUtf8 => None,
        // Not about this value (say a conflict with an environment variable): the final parse
        // reports it.
        _ => return Ok(()),
    };
    let reason = match (reason, secret) {
        (Some(reason), true) => reason.replace(&value_text(pieces), MASK),
        (Some(reason), false) => reason,
        (None, true) => "not a valid value".to_owned(),
        (None, false) => first_line(&error),
    };
    let shown = if secret {
        MASK.to_owned()
    } else {
        mask_url(&value_text(pieces))
    };
    Err(format!("`{key}`: invalid value {shown:?}: {reason}"))
}

/// The values of `--key=value` arguments, as one text.
fn value_text(pieces: &[String]) -> String {
    let values: Vec<&str> = pieces
        .iter()
        .filter_map(|piece| piece.split_once('=').map(|(_, value)| value))
        .collect();
    values.join(",")
}

/// The first line of a clap error, without its `error: ` prefix.
fn first_line(error: &clap::Error) -> String {
    let text = error.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// Whether a flag's value is itself a credential, shown as [`MASK`]: a flag that hides its
/// environment value (`hide_env_values`), or one whose name says secret, password, token,
/// credential or API key — unless its value is a path (`--jwt-secret-file` names a file, it is
/// not the secret).
pub(crate) fn is_secret(arg: &Arg) -> bool {
    if arg.is_hide_env_values_set() {
        return true;
    }
    let name = arg.get_long().unwrap_or_default().to_ascii_lowercase();
    let is_path = parses_as(arg, clap::value_parser!(PathBuf))
        || ["-file", "-dir", "-path"]
            .iter()
            .any(|suffix| name.ends_with(suffix));
    !is_path && SECRET_WORDS.iter().any(|word| name.contains(word))
}

/// `value` with any URL's credentials masked: the password of `user:password@` (or a lone
/// `token@`), and the values of query parameters named like credentials (`?token=`, `sig=`).
/// Applies to every setting, so a URL flag added later is covered.
pub(crate) fn mask_url(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else {
        return value.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &value[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:{MASK}@{host}"),
            None => format!("{MASK}@{host}"),
        },
        None => authority.to_owned(),
    };
    let (path, query_and_fragment) = match tail.find('?') {
        Some(at) => tail.split_at(at),
        None => (tail, ""),
    };
    let (query, fragment) = match query_and_fragment.find('#') {
        Some(at) => query_and_fragment.split_at(at),
        None => (query_and_fragment, ""),
    };
    let query = query.strip_prefix('?').map(|query| {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _))
                    if SECRET_PARAMETERS
                        .iter()
                        .any(|word| name.to_ascii_lowercase().contains(word)) =>
                {
                    format!("{name}={MASK}")
                }
                _ => parameter.to_owned(),
            })
            .collect();
        format!("?{}", parameters.join("&"))
    });
    format!(
        "{}{authority}{path}{}{fragment}",
        &value[..rest_start],
        query.unwrap_or_default()
    )
}

/// The effective configuration as TOML: every setting (in `--help` order), its value, and
/// where it came from as a trailing comment; secrets masked.
fn render(
    serve: &Command,
    matches: &ArgMatches,
    from_file: &[String],
    config: Option<&Path>,
) -> String {
    let mut out = String::from(
        "# resumable serve: the effective configuration (--print-config), each setting followed by\n\
         # where it came from. Usable as a --config file; masked values (***) must be filled in.\n",
    );
    if let Some(config) = config {
        let _ = writeln!(out, "# config file: {}", config.display());
    }
    for arg in serve.get_arguments().filter(|arg| configurable(arg)) {
        let id = arg.get_id().as_str();
        let key = arg.get_long().expect("configurable flags have a long name");
        let source = if from_file.iter().any(|file| file == id) {
            Source::File
        } else {
            match matches.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env,
                Some(ValueSource::DefaultValue) => Source::Default,
                Some(_) | None => Source::Unset,
            }
        };
        let (value, masked) = effective(arg, matches, id);
        let mut origin = match source {
            Source::Flag => format!("--{key}"),
            Source::Env => format!(
                "env {}",
                arg.get_env()
                    .map(|env| env.to_string_lossy())
                    .unwrap_or_default()
            ),
            Source::File => "config file".to_owned(),
            Source::Default => "default".to_owned(),
            Source::Unset => "not set".to_owned(),
        };
        if masked {
            origin.push_str(", masked");
        }
        match value {
            Some(value) => {
                let _ = writeln!(out, "{key} = {value}  # {origin}");
            }
            None => {
                let _ = writeln!(out, "# {key} =  # {origin}");
            }
        }
    }
    out
}

/// A setting's effective value as a TOML value (`None` when unset), and whether it was masked.
fn effective(arg: &Arg, matches: &ArgMatches, id: &str) -> (Option<String>, bool) {
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            return (Some(matches.get_flag(id).to_string()), false);
        }
        ArgAction::Count => return (Some(matches.get_count(id).to_string()), false),
        _ => {}
    }
    let Some(raw) = matches.get_raw(id) else {
        return (None, false);
    };
    let secret = is_secret(arg);
    let mut masked = false;
    let integer = is_integer(arg);
    let values: Vec<String> = raw
        .map(|value| {
            let text = value.to_string_lossy();
            let shown = if secret {
                MASK.to_owned()
            } else {
                mask_url(&text)
            };
            masked |= shown != text;
            match shown.parse::<i64>() {
                Ok(number) if integer && number.to_string() == shown => shown,
                _ => toml::Value::String(shown).to_string(),
            }
        })
        .collect();
    let value = if matches!(arg.get_action(), ArgAction::Append) || values.len() > 1 {
        format!("[{}]", values.join(", "))
    } else {
        values.into_iter().next().unwrap_or_default()
    };
    (Some(value), masked)
}

/// Whether a flag's values are plain integers (printed as TOML integers).
fn is_integer(arg: &Arg) -> bool {
    parses_as(arg, clap::value_parser!(u64))
        || parses_as(arg, clap::value_parser!(i64))
        || parses_as(arg, clap::value_parser!(u32))
        || parses_as(arg, clap::value_parser!(i32))
        || parses_as(arg, clap::value_parser!(u16))
        || parses_as(arg, clap::value_parser!(u8))
        || parses_as(arg, clap::value_parser!(usize))
}

/// Whether `arg`'s values are of the type `parser` makes.
pub(crate) fn parses_as(arg: &Arg, parser: impl Into<ValueParser>) -> bool {
    arg.get_value_parser().type_id() == parser.into().type_id()
}

/// The settings of a `--print-config` output, as key → (TOML value, comment), for tests.
#[cfg(test)]
fn parse_printed(printed: &str) -> std::collections::BTreeMap<String, (toml::Value, String)> {
    printed
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (setting, comment) = line.rsplit_once("  # ").expect("a trailing comment");
            let table: toml::Table = setting.parse().expect("a TOML setting");
            let (key, value) = table.into_iter().next().expect("one setting");
            (key, (value, comment.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn command() -> Command {
        let mut command = crate::Cli::command();
        command.build();
        command
    }

    fn serve() -> Command {
        command().find_subcommand(SUBCOMMAND).unwrap().clone()
    }

    /// A valid value, other than its default, for every kind of value a `serve` flag takes. A
    /// flag of a new kind fails [`every_key_round_trips_through_print_config`] until it has one.
    fn sample(arg: &Arg) -> Option<toml::Value> {
        let key = arg.get_long()?;
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            return Some(toml::Value::Boolean(true));
        }
        if matches!(arg.get_action(), ArgAction::SetFalse) {
            return Some(toml::Value::Boolean(false));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|value| value.to_string_lossy().into_owned())
            .collect();
        let possible = arg.get_possible_values();
        if !possible.is_empty() {
            let name = possible
                .iter()
                .map(|value| value.get_name().to_owned())
                .find(|name| !defaults.contains(name))?;
            return Some(toml::Value::String(name));
        }
        let is = |parser: ValueParser| parses_as(arg, parser);
        let string = |text: &str| Some(toml::Value::String(text.to_owned()));
        let list = |items: &[&str]| {
            let items = items
                .iter()
                .map(|item| toml::Value::String((*item).to_owned()));
            Some(toml::Value::Array(items.collect()))
        };
        if is(clap::value_parser!(PathBuf)) {
            string(&format!("/srv/sample/{key}"))
        } else if is(clap::value_parser!(String)) {
            string(&format!("https://sample.example/{key}"))
        } else if is(clap::value_parser!(std::net::SocketAddr).into()) {
            string("0.0.0.0:9090")
        } else if is(clap::value_parser!(u64).into())
            || is(clap::value_parser!(u32).into())
            || is(clap::value_parser!(usize).into())
        {
            Some(toml::Value::Integer(4242))
        } else if key == "lock-lease" {
            // A duration, but a short one (see parse_lease).
            string("20s")
        } else if is(ValueParser::new(crate::serve::parse_min_free_space)) {
            string("5%")
        } else if is(ValueParser::new(humantime::parse_duration)) {
            // Distinct per key, so that a value landing on the wrong key shows.
            string(&format!("{}s", 100 + key.len()))
        } else if is(ValueParser::new(crate::options::parse_size)) {
            string("3MiB")
        } else if is(ValueParser::new(crate::serve::parse_max_size)) {
            string("2GiB")
        } else if is(ValueParser::new(crate::serve::parse_expiry)) {
            string("3h")
        } else if is(ValueParser::new(crate::serve::parse_origins)) {
            list(&["https://a.example", "https://b.example"])
        } else if is(ValueParser::new(crate::serve::parse_public_url)) {
            string("https://uploads.example.com/base")
        } else if is(ValueParser::new(crate::storage::parse_store)) {
            string("s3://sample-bucket/uploads")
        } else if is(ValueParser::new(crate::hooks::parse_kinds)) {
            list(&["post-create", "post-finish"])
        } else {
            None
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `resumable serve --config FILE FLAGS…`, FILE being `text` written as `name` in `dir`.
    fn with_file(dir: &Path, name: &str, text: &str, flags: &[&str]) -> Vec<String> {
        let path = write(dir, name, text);
        let mut args = ["resumable", "serve", "--config", path.to_str().unwrap()]
            .map(String::from)
            .to_vec();
        args.extend(flags.iter().map(|flag| flag.to_string()));
        args
    }

    fn resolve_ok<S: AsRef<str>>(args: &[S]) -> Resolved {
        resolve(command(), args.iter().map(AsRef::as_ref))
            .unwrap_or_else(|error| panic!("{error:?}"))
    }

    fn config_error<S: AsRef<str>>(args: &[S]) -> String {
        match resolve(command(), args.iter().map(AsRef::as_ref)) {
            Err(Error::Config(message)) => message,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    /// The configurable flags, split into groups without conflicts between two flags of one
    /// group (one file each), so every key can be set.
    fn groups(serve: &Command) -> Vec<Vec<&Arg>> {
        let mut groups: Vec<Vec<&Arg>> = Vec::new();
        for arg in serve.get_arguments().filter(|arg| configurable(arg)) {
            let conflicts = serve.get_arg_conflicts_with(arg);
            let fits = |group: &Vec<&Arg>| {
                group.iter().all(|other| {
                    !conflicts
                        .iter()
                        .any(|conflict| conflict.get_id() == other.get_id())
                        && !serve
                            .get_arg_conflicts_with(other)
                            .iter()
                            .any(|conflict| conflict.get_id() == arg.get_id())
                })
            };
            match groups.iter_mut().find(|group| fits(group)) {
                Some(group) => group.push(arg),
                None => groups.push(vec![arg]),
            }
        }
        groups
    }

    /// What `--print-config` shows for a sample: a list of a flag that takes one value is its
    /// comma syntax.
    fn expected(arg: &Arg, sample: &toml::Value) -> toml::Value {
        match sample {
            toml::Value::Array(items) if !matches!(arg.get_action(), ArgAction::Append) => {
                let items: Vec<String> = items.iter().map(|item| scalar(item).unwrap()).collect();
                toml::Value::String(items.join(","))
            }
            other => other.clone(),
        }
    }

    #[test]
    fn every_key_round_trips_through_print_config() {
        let serve = serve();
        let dir = tempfile::tempdir().unwrap();
        let mut covered = 0;
        for (number, group) in groups(&serve).into_iter().enumerate() {
            let mut file = String::new();
            let mut samples = Vec::new();
            for arg in group {
                let key = arg.get_long().unwrap();
                let sample = sample(arg).unwrap_or_else(|| {
                    panic!("no sample value for `{key}`: add one for its value type in sample()")
                });
                let _ = writeln!(file, "{key} = {sample}");
                samples.push((arg, key, sample));
            }
            let resolved = resolve_ok(&with_file(
                dir.path(),
                &format!("every-{number}.toml"),
                &file,
                &["--print-config"],
            ));
            let printed = parse_printed(resolved.printed.as_deref().unwrap());
            for (arg, key, sample) in samples {
                let (value, origin) = printed
                    .get(key)
                    .unwrap_or_else(|| panic!("--print-config does not show `{key}`:\n{file}"));
                assert_eq!(*value, expected(arg, &sample), "`{key}` did not round-trip");
                assert_eq!(origin, "config file", "`{key}`'s source");
                covered += 1;
            }
        }
        let every = serve
            .get_arguments()
            .filter(|arg| configurable(arg))
            .count();
        assert_eq!(covered, every, "every configurable flag was set");
        assert!(every > 30, "the serve flags were found ({every})");
    }

    #[test]
    fn print_config_shows_every_flag_and_its_source() {
        let resolved = resolve_ok(&["resumable", "serve", "--print-config", "--max-size", "5000"]);
        let text = resolved.printed.unwrap();
        let printed = parse_printed(&text);
        for arg in serve().get_arguments().filter(|arg| configurable(arg)) {
            let key = arg.get_long().unwrap();
            let shown =
                printed.contains_key(key) || text.contains(&format!("# {key} =  # not set"));
            assert!(shown, "`{key}` missing from:\n{text}");
        }
        assert_eq!(
            printed["max-size"],
            (toml::Value::String("5000".into()), "--max-size".into())
        );
        assert_eq!(printed["listen"].1, "default");
        assert_eq!(printed["behind-proxy"].0, toml::Value::Boolean(false));
        // The printed configuration is itself a valid config file.
        let dir = tempfile::tempdir().unwrap();
        let again = resolve_ok(&with_file(
            dir.path(),
            "printed.toml",
            &text,
            &["--print-config"],
        ));
        let again = parse_printed(&again.printed.unwrap());
        assert_eq!(again["max-size"].0, printed["max-size"].0);
    }

    #[test]
    fn flags_and_environment_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let resolved = resolve_ok(&with_file(
            dir.path(),
            "c.toml",
            "max-size = \"1KiB\"\nlock-timeout = \"3s\"\n",
            &["--max-size", "2KiB", "--print-config"],
        ));
        let printed = parse_printed(&resolved.printed.unwrap());
        assert_eq!(
            printed["max-size"],
            (toml::Value::String("2KiB".into()), "--max-size".into())
        );
        assert_eq!(
            printed["lock-timeout"],
            (toml::Value::String("3s".into()), "config file".into())
        );
        // And the values reach the arguments themselves.
        let crate::Command::Serve(args) =
            <crate::Cli as clap::FromArgMatches>::from_arg_matches(&resolved.matches)
                .unwrap()
                .command
        else {
            panic!("serve");
        };
        assert!(format!("{args:?}").contains("lock_timeout: 3s"), "{args:?}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name_with_the_closest_flag() {
        let dir = tempfile::tempdir().unwrap();
        let message = config_error(&with_file(
            dir.path(),
            "c.toml",
            "max-szie = \"1KiB\"\n",
            &[],
        ));
        assert!(message.contains("unknown key `max-szie`"), "{message}");
        assert!(message.contains("did you mean `max-size`"), "{message}");
        let message = config_error(&with_file(
            dir.path(),
            "d.toml",
            "zzzzzzzzzzzzzz = 1\n",
            &[],
        ));
        assert!(
            message.contains("unknown key `zzzzzzzzzzzzzz`") && !message.contains("did you mean"),
            "{message}"
        );
        let message = config_error(&with_file(
            dir.path(),
            "e.toml",
            "print-config = true\n",
            &[],
        ));
        assert!(
            message.contains("`print-config` cannot be set"),
            "{message}"
        );
    }

    #[test]
    fn wrongly_typed_values_name_the_key_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            (
                "lock-timeout = 30\n",
                "`lock-timeout`: invalid value \"30\"",
            ),
            (
                "max-size = \"1e3\"\n",
                "`max-size`: invalid value \"1e3\": unknown size unit",
            ),
            (
                "behind-proxy = \"yes\"\n",
                "`behind-proxy`: expected true or false, found a string",
            ),
            (
                "auth = \"magic\"\n",
                "`auth`: invalid value \"magic\": expected one of none, jwt, tokens, forward",
            ),
            (
                "listen = 1.5\n",
                "`listen`: expected a string, an integer or a boolean, found a float",
            ),
            (
                "quota-uploads = -3\n",
                "`quota-uploads`: invalid value \"-3\"",
            ),
        ] {
            let message = config_error(&with_file(dir.path(), "c.toml", text, &[]));
            assert!(message.contains(expected), "{text}: {message}");
        }
        let message = config_error(&with_file(dir.path(), "c.toml", "max-size = [\n", &[]));
        assert!(message.contains("not valid TOML"), "{message}");
        let message = config_error(&["resumable", "serve", "--config", "/nonexistent/x.toml"]);
        assert!(message.contains("cannot read it"), "{message}");
    }

    #[test]
    fn conflicting_file_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let message = config_error(&with_file(
            dir.path(),
            "c.toml",
            "hook-url = \"http://h/\"\nhook-command = \"/bin/true\"\n",
            &[],
        ));
        assert!(message.contains("cannot be used with"), "{message}");
    }

    #[test]
    fn lists_take_arrays_or_the_comma_syntax() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "cors-origins = [\"https://a.example\", \"https://b.example\"]\n",
            "cors-origins = \"https://a.example,https://b.example\"\n",
        ] {
            let resolved = resolve_ok(&with_file(dir.path(), "c.toml", text, &["--print-config"]));
            let printed = parse_printed(&resolved.printed.unwrap());
            assert_eq!(
                printed["cors-origins"].0,
                toml::Value::String("https://a.example,https://b.example".into()),
                "{text}"
            );
        }
    }

    #[test]
    fn secrets_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let resolved = resolve_ok(&with_file(
            dir.path(),
            "c.toml",
            "hook-url = \"http://hooks:s3cret@hooks.example/x?sig=abc&keep=1\"\n\
             auth-forward-url = \"https://tok3n@auth.example/check\"\n\
             jwt-secret-file = \"/etc/resumable/jwt.key\"\n",
            &["--print-config"],
        ));
        let text = resolved.printed.unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("tok3n") && !text.contains("abc"),
            "{text}"
        );
        let printed = parse_printed(&text);
        assert_eq!(
            printed["hook-url"].0,
            toml::Value::String("http://hooks:***@hooks.example/x?sig=***&keep=1".into())
        );
        assert_eq!(printed["hook-url"].1, "config file, masked");
        assert_eq!(
            printed["auth-forward-url"].0,
            toml::Value::String("https://***@auth.example/check".into())
        );
        // A path to a secret is not a secret.
        assert_eq!(
            printed["jwt-secret-file"].0,
            toml::Value::String("/etc/resumable/jwt.key".into())
        );
        // An invalid value of a URL flag is masked in the error too.
        let message = config_error(&with_file(
            dir.path(),
            "d.toml",
            "public-url = \"ftp://u:s3cret@x/\"\n",
            &[],
        ));
        assert!(
            !message.contains("s3cret") && message.contains("public-url"),
            "{message}"
        );
    }

    #[test]
    fn the_masking_rule() {
        let arg = |long: &'static str| Arg::new(long).long(long);
        assert!(is_secret(&arg("redis-password")));
        assert!(is_secret(&arg("api-token")));
        assert!(is_secret(&arg("hook-secret")));
        assert!(is_secret(&arg("x").hide_env_values(true)));
        assert!(!is_secret(&arg("jwt-secret-file")));
        assert!(!is_secret(
            &arg("tls-key").value_parser(clap::value_parser!(PathBuf))
        ));
        assert!(!is_secret(&arg("auth")));
        assert_eq!(
            mask_url("redis://:pw@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(
            mask_url("https://a.example/p?x=1"),
            "https://a.example/p?x=1"
        );
        assert_eq!(
            mask_url("https://a.example/p?X-Amz-Signature=zz#f"),
            "https://a.example/p?X-Amz-Signature=***#f"
        );
        assert_eq!(mask_url("not a url"), "not a url");
    }

    #[test]
    fn other_subcommands_are_untouched() {
        let resolved = resolve_ok(&["resumable", "status", "http://x/files/abc"]);
        assert!(resolved.printed.is_none());
        assert_eq!(resolved.matches.subcommand_name(), Some("status"));
    }

    #[test]
    fn distances() {
        assert_eq!(distance("max-szie", "max-size"), 2);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("listen", "listen"), 0);
    }
}
