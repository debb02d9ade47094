//! The packaging: env/custom.env lists every variable the code reads (found by scanning src/),
//! the compose file is valid for the docker-compose of this machine and says what the README
//! says, and the local image build gives an image that runs the binary, its classic names,
//! rsync and ssh.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;
use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// A small Rust lexer: enough to tell code from comments and string literals.

/// A source file with comments removed and every string literal replaced by `"@N"`, N its
/// index in `literals` (so that braces or names inside strings never confuse the scan).
struct Lexed {
    code: String,
    literals: Vec<String>,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn lex(src: &str) -> Lexed {
    let chars: Vec<char> = src.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut code = String::new();
    let mut literals = Vec::new();
    let mut i = 0;
    let mut push_literal = |code: &mut String, text: String| {
        code.push_str(&format!("\"@{}\"", literals.len()));
        literals.push(text);
    };
    while i < chars.len() {
        let c = chars[i];
        let prev_ident = i > 0 && is_ident(chars[i - 1]);
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            code.push(' ');
            continue;
        }
        if !prev_ident && (c == 'r' || (c == 'b' && at(i + 1) == 'r')) {
            let mut j = i + if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) == '"' {
                let start = j + 1;
                let mut k = start;
                loop {
                    if k >= chars.len() {
                        break;
                    }
                    if chars[k] == '"' && (0..hashes).all(|h| at(k + 1 + h) == '#') {
                        break;
                    }
                    k += 1;
                }
                push_literal(&mut code, chars[start..k.min(chars.len())].iter().collect());
                i = k + 1 + hashes;
                continue;
            }
        }
        if c == '"' {
            let mut k = i + 1;
            let mut text = String::new();
            while k < chars.len() && chars[k] != '"' {
                if chars[k] == '\\' {
                    text.push(chars[k]);
                    k += 1;
                }
                if k < chars.len() {
                    text.push(chars[k]);
                }
                k += 1;
            }
            push_literal(&mut code, text);
            i = k + 1;
            continue;
        }
        if c == '\'' {
            // A char literal ('x', '\n', '\'') or a lifetime ('a): copy a char literal whole so
            // that '"' or '{' in it is not taken for code.
            if at(i + 1) == '\\' {
                let mut k = i + 3;
                while k < chars.len() && chars[k] != '\'' {
                    k += 1;
                }
                code.push_str("' '");
                i = k + 1;
                continue;
            }
            if at(i + 2) == '\'' {
                code.push_str("' '");
                i += 3;
                continue;
            }
        }
        code.push(c);
        i += 1;
    }
    Lexed { code, literals }
}

impl Lexed {
    /// The literal whose marker starts at `code[pos..]`, if one does.
    fn literal_at(&self, pos: usize) -> Option<&str> {
        let rest = self.code[pos..].strip_prefix("\"@")?;
        let end = rest.find('"')?;
        let index: usize = rest[..end].parse().ok()?;
        self.literals.get(index).map(String::as_str)
    }

    /// The literals still referenced from the code.
    fn live_literals(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = self.code.as_str();
        let mut offset = 0;
        while let Some(found) = rest.find("\"@") {
            if let Some(text) = self.literal_at(offset + found) {
                out.push(text);
            }
            offset += found + 2;
            rest = &self.code[offset..];
        }
        out
    }
}

/// The index of the brace that closes the one at `open`.
fn matching_brace(code: &str, open: usize) -> usize {
    let mut depth = 0;
    for (i, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + i;
                }
            }
            _ => {}
        }
    }
    code.len() - 1
}

/// Removes the `#[cfg(test)] mod name { ... }` blocks: test-only settings are not the program's.
fn without_test_modules(code: &str) -> String {
    let mut code = code.to_owned();
    while let Some(at) = code.find("#[cfg(test)]") {
        let after = code[at + 12..].trim_start();
        let Some(open) = code[at..].find('{').map(|o| o + at) else {
            break;
        };
        let end = if after.starts_with("mod ") || after.starts_with("pub mod ") {
            matching_brace(&code, open) + 1
        } else {
            at + 12 // an attribute on something else: drop only the attribute
        };
        code.replace_range(at..end, " ");
    }
    code
}

// ---------------------------------------------------------------------------------------------
// What the code reads.

/// The environment variables a set of source files reads, and where; plus the scan's failures.
#[derive(Debug, Default)]
struct Reads {
    names: BTreeMap<String, String>,
    problems: Vec<String>,
}

struct SourceFile {
    path: String,
    lexed: Lexed,
}

fn load_sources(dir: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push(source(&path.display().to_string(), &text));
            }
        }
    }
    files
}

fn source(path: &str, text: &str) -> SourceFile {
    let mut lexed = lex(text);
    lexed.code = without_test_modules(&lexed.code);
    SourceFile {
        path: path.to_owned(),
        lexed,
    }
}

/// Every `needle` in `code` that is not the tail of a longer identifier.
fn find_calls<'a>(code: &'a str, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    code.match_indices(needle)
        .map(|(i, _)| i)
        .filter(move |&i| i == 0 || !is_ident(code[..i].chars().last().unwrap()))
}

fn skip_ws(code: &str, pos: usize) -> usize {
    pos + (code[pos..].len() - code[pos..].trim_start().len())
}

/// The identifier (path segments joined by `::`) at `pos`, and the position after it.
fn path_at(code: &str, pos: usize) -> (String, usize) {
    let end = code[pos..]
        .find(|c: char| !(is_ident(c) || c == ':'))
        .map(|e| pos + e)
        .unwrap_or(code.len());
    (code[pos..end].to_owned(), end)
}

fn last_segment(path: &str) -> &str {
    path.rsplit("::").next().unwrap_or(path)
}

fn scan(files: &[SourceFile]) -> Reads {
    let mut reads = Reads::default();
    for file in files {
        let code = &file.lexed.code;
        let mut read = |name: &str| {
            reads
                .names
                .entry(name.to_owned())
                .or_insert_with(|| file.path.clone());
        };
        // Names written out anywhere in a string: XIVO_HA_ROOT in `env = "..."`, in an error
        // message, in env::var(...). A name ending in `_` is a prefix, handled below.
        for literal in file.lexed.live_literals() {
            for (i, _) in literal.match_indices("XIVO_HA_") {
                if i > 0 && is_ident(literal[..i].chars().last().unwrap()) {
                    continue;
                }
                let name: String = literal[i..]
                    .chars()
                    .take_while(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    .collect();
                if !name.ends_with('_') {
                    read(&name);
                }
            }
        }
        // Any other name read directly from the environment.
        for needle in [
            "env::var(",
            "env::var_os(",
            "try_from_env(",
            "std::env!(",
            "env = ",
        ] {
            for at in find_calls(code, needle) {
                let arg = skip_ws(code, at + needle.len());
                if let Some(name) = file.lexed.literal_at(arg) {
                    read(name);
                }
            }
        }
        // Settings structs read with config::from_env(prefix, file): prefix + each field.
        for at in find_calls(code, "from_env") {
            let mut pos = at + "from_env".len();
            let mut type_name = None;
            if code[pos..].starts_with("::<") {
                let (path, end) = path_at(code, pos + 3);
                type_name = Some(last_segment(&path).to_owned());
                pos = end;
                while pos < code.len() && !code[pos..].starts_with('(') {
                    pos += 1;
                }
            }
            if !code[pos..].starts_with('(') {
                continue; // `fn from_env<T...>` or an import
            }
            let arg = skip_ws(code, pos + 1);
            let prefix = match file.lexed.literal_at(arg) {
                Some(prefix) => Some(prefix.to_owned()),
                None => {
                    let (path, _) = path_at(code, arg);
                    const_value(file, last_segment(&path))
                }
            };
            let type_name = type_name.or_else(|| annotated_type(code, at));
            match (prefix, type_name) {
                (Some(prefix), Some(type_name)) => {
                    // Several modules may each have a `Settings`: the one beside the call first.
                    let ordered: Vec<&SourceFile> = std::iter::once(file)
                        .chain(files.iter().filter(|f| f.path != file.path))
                        .collect();
                    match struct_fields(&ordered, &type_name, &mut BTreeSet::new()) {
                        Some(fields) => {
                            for field in fields {
                                read(&format!("{prefix}{}", field.to_uppercase()));
                            }
                        }
                        None => reads.problems.push(format!(
                            "{}: from_env reads `{type_name}`, whose named fields are not found in src/",
                            file.path
                        )),
                    }
                }
                (prefix, type_name) => reads.problems.push(format!(
                    "{}: cannot tell what a from_env call reads (prefix {prefix:?}, type {type_name:?}): \
                     pass the prefix as a string or a `const NAME: &str`, and write \
                     `from_env::<Type>(...)` or `let x: Type = from_env(...)`",
                    file.path
                )),
            }
        }
    }
    reads
}

/// `const NAME: &str = "..."` (or `&'static str`) in the file.
fn const_value(file: &SourceFile, name: &str) -> Option<String> {
    let code = &file.lexed.code;
    for at in find_calls(code, &format!("const {name}:")) {
        let eq = code[at..].find('=')? + at;
        if let Some(value) = file.lexed.literal_at(skip_ws(code, eq + 1)) {
            return Some(value.to_owned());
        }
    }
    None
}

/// The type a `from_env(...)` call at `at` is read into: the `let x: Type =` of its statement,
/// or the `-> Result<Type, ...>` of the function it ends.
fn annotated_type(code: &str, at: usize) -> Option<String> {
    let start = code[..at]
        .rfind([';', '{', '}'])
        .map(|s| s + 1)
        .unwrap_or(0);
    let statement = &code[start..at];
    if let Some(l) = statement.find("let ") {
        let rest = statement[l + 4..].trim_start();
        let rest = rest.strip_prefix("mut ").unwrap_or(rest);
        if let Some(colon) = rest.find(':')
            && rest[..colon].trim().chars().all(is_ident)
        {
            let ty = rest[colon + 1..].trim_start();
            let (path, _) = path_at(ty, 0);
            if !path.is_empty() {
                return Some(last_segment(&path).to_owned());
            }
        }
    }
    let fn_at = code[..at].rfind("fn ")?;
    let signature = &code[fn_at..code[fn_at..].find('{').map(|b| b + fn_at)?];
    let ret = signature.rsplit_once("->")?.1.trim();
    let ret = ret.strip_prefix("Result<").unwrap_or(ret);
    let (path, _) = path_at(ret, 0);
    (!path.is_empty()).then(|| last_segment(&path).to_owned())
}

/// The variable-name fields of `struct name { ... }` (serde's rename, skip and flatten).
fn struct_fields(
    files: &[&SourceFile],
    name: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if !seen.insert(name.to_owned()) {
        return Some(Vec::new());
    }
    for file in files.iter().copied() {
        let code = &file.lexed.code;
        for at in find_calls(code, &format!("struct {name}")) {
            let after = at + "struct ".len() + name.len();
            if code[after..].starts_with(|c: char| is_ident(c)) {
                continue;
            }
            let open = after + code[after..].find(['{', ';', '('])?;
            if !code[open..].starts_with('{') {
                return None; // a tuple or unit struct has no named fields
            }
            let body = &code[open + 1..matching_brace(code, open)];
            let mut fields = Vec::new();
            for chunk in split_fields(body) {
                let mut rest = chunk.trim();
                let mut rename = None;
                let (mut skip, mut flatten) = (false, false);
                while rest.starts_with("#[") {
                    let end = rest.find(']').unwrap_or(rest.len() - 1);
                    let attribute = &rest[..=end];
                    if attribute.contains("serde") {
                        skip |= attribute.contains("skip");
                        flatten |= attribute.contains("flatten");
                        if let Some(r) = attribute.find("rename =") {
                            let lit = skip_ws(attribute, r + "rename =".len());
                            // Every slice here is a slice of `code`: its offset is its position.
                            let offset = attribute.as_ptr() as usize - code.as_ptr() as usize;
                            rename = file.lexed.literal_at(offset + lit);
                        }
                    }
                    rest = rest[end + 1..].trim_start();
                }
                let rest = rest.strip_prefix("pub(crate)").unwrap_or(rest).trim_start();
                let rest = rest.strip_prefix("pub ").unwrap_or(rest).trim_start();
                let Some((field, ty)) = rest.split_once(':') else {
                    continue;
                };
                if skip {
                    continue;
                }
                if flatten {
                    let (path, _) = path_at(ty.trim(), 0);
                    fields.extend(struct_fields(files, last_segment(&path), seen)?);
                    continue;
                }
                fields.push(
                    rename
                        .map(str::to_owned)
                        .unwrap_or_else(|| field.trim().to_owned()),
                );
            }
            return Some(fields);
        }
    }
    None
}

/// A struct body split at its top-level commas.
fn split_fields(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in body.char_indices() {
        match c {
            '<' | '(' | '[' | '{' => depth += 1,
            '>' | ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&body[start..]);
    out.into_iter().filter(|c| !c.trim().is_empty()).collect()
}

#[test]
fn the_scan_finds_each_way_of_reading_a_variable() {
    let settings = source(
        "settings.rs",
        r##"
        //! Mentions `XIVO_HA_IN_A_DOC_COMMENT`, never read.
        use serde::Deserialize;
        const PREFIX: &str = "XIVO_HA_BAR_";
        #[derive(Deserialize)]
        pub struct Foo {
            #[serde(default)]
            pub poll_ms: u64,
            #[serde(rename = "peer_host")]
            host: Option<Vec<String>>,
            #[serde(skip)]
            cache: BTreeMap<String, u8>,
            #[serde(flatten)]
            common: Common,
        }
        struct Common { retries: u8 }
        #[derive(Deserialize)]
        struct Bar { level: String }
        fn load(file: &EnvFile) -> Result<Foo, ConfigError> {
            let _: Bar = crate::config::from_env(PREFIX, file)?; // a comment: env::var("NOT_READ")
            let brace = '{'; let quote = '"'; let s = r#"{"a": "}"#;
            std::env::var("REPORTING_DB_HOST").ok();
            config::from_env("XIVO_HA_FOO_", file)
        }
        fn other(file: &EnvFile) { let x = crate::config::from_env::<Bar>("", file); }
        #[derive(clap::Args)]
        struct Args {
            #[arg(long, env = "XIVO_HA_FLAG")]
            flag: bool,
        }
        fn message() -> String { format!("set XIVO_HA_PG_CA_FILE or XIVO_HA_PREFIX_ only") }
        #[cfg(test)]
        mod tests {
            fn t() { std::env::var("XIVO_HA_TEST_ONLY"); from_env::<Nope>("X_", f); }
        }
        "##,
    );
    // Another module's struct of the same name must not be taken for this file's.
    let other = source("other.rs", "struct Bar { unrelated: u8 }");
    let reads = scan(&[other, settings]);
    assert!(reads.problems.is_empty(), "{:?}", reads.problems);
    let names: Vec<&str> = reads.names.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "LEVEL",
            "REPORTING_DB_HOST",
            "XIVO_HA_BAR_LEVEL",
            "XIVO_HA_FLAG",
            "XIVO_HA_FOO_PEER_HOST",
            "XIVO_HA_FOO_POLL_MS",
            "XIVO_HA_FOO_RETRIES",
            "XIVO_HA_PG_CA_FILE",
        ]
    );

    // A call whose type cannot be told is a failure, not a silent pass.
    let vague = source(
        "vague.rs",
        "fn f(file: &EnvFile) { let s = from_env(\"XIVO_HA_X_\", file); use_it(s); }",
    );
    let reads = scan(&[vague]);
    assert_eq!(reads.problems.len(), 1, "{:?}", reads.problems);
    assert!(reads.problems[0].contains("from_env::<Type>"));
}

// ---------------------------------------------------------------------------------------------
// env/custom.env

struct Documented {
    /// Name → value, `None` for a commented-out line.
    values: BTreeMap<String, Option<String>>,
    problems: Vec<String>,
}

fn documented() -> Documented {
    let path = repo().join("env/custom.env");
    let text = std::fs::read_to_string(&path).unwrap();
    // It is a valid compose env file, as xivo-ha parses it.
    xivo_ha::config::EnvFile::parse(&path, &text).unwrap();
    let variable = |line: &str| -> Option<(String, bool, String)> {
        let (commented, rest) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, line),
        };
        let (name, value) = rest.split_once('=')?;
        let valid = !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_uppercase())
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        valid.then(|| (name.to_owned(), commented, value.to_owned()))
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((name, commented, value)) = variable(line) else {
            continue;
        };
        let explained = i > 0 && lines[i - 1].starts_with('#') && variable(lines[i - 1]).is_none();
        if !explained {
            problems.push(format!(
                "env/custom.env line {}: {name} has no comment line above it",
                i + 1
            ));
        }
        if values
            .insert(name.clone(), (!commented).then_some(value))
            .is_some()
        {
            problems.push(format!("env/custom.env: {name} is listed twice"));
        }
    }
    Documented { values, problems }
}

/// `${NAME...}` interpolations of the compose file: variables of compose, not of the binary.
fn compose_variables() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("compose/docker-compose.yml")).unwrap();
    text.split("${")
        .skip(1)
        .map(|rest| rest.chars().take_while(|&c| is_ident(c)).collect())
        .collect()
}

#[test]
fn custom_env_lists_every_variable_the_code_reads() {
    let reads = scan(&load_sources(&repo().join("src")));
    assert!(reads.problems.is_empty(), "{:#?}", reads.problems);
    // The foundation's variables are found (the scan works on the real tree).
    for name in [
        "XIVO_HA_ROOT",
        "XIVO_HA_DB",
        "XIVO_HA_LOG",
        "XIVO_HA_PG_CA_FILE",
        "XIVO_HA_MONITORING_CONF_DIR",
    ] {
        assert!(
            reads.names.contains_key(name),
            "{name} not found by the scan"
        );
    }
    let documented = documented();
    assert!(documented.problems.is_empty(), "{:#?}", documented.problems);
    let missing: Vec<String> = reads
        .names
        .iter()
        .filter(|(name, _)| !documented.values.contains_key(*name))
        .map(|(name, file)| format!("{name} (read in {file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "env/custom.env lacks {missing:?}: add `NAME=<default>` (or `#NAME=` when it has no \
         fixed default) with a one-line comment above it"
    );
    // And nothing stale: every xivo-ha variable listed is read by the code or by compose.
    let compose = compose_variables();
    let stale: Vec<&String> = documented
        .values
        .keys()
        .filter(|n| n.starts_with("XIVO_HA_"))
        .filter(|n| !reads.names.contains_key(*n) && !compose.contains(*n))
        .collect();
    assert!(
        stale.is_empty(),
        "env/custom.env lists {stale:?}, which nothing reads"
    );
}

#[test]
fn custom_env_gives_the_code_defaults() {
    let documented = documented();
    // The command line's variables: a default is listed as an active line with that value.
    fn check(command: &clap::Command, documented: &Documented, errors: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
                continue;
            };
            let default = arg.get_default_values().first().and_then(|v| v.to_str());
            let listed = documented.values.get(env);
            match (default, listed) {
                (_, None) => errors.push(format!("{env} is not listed")),
                (Some(default), Some(Some(value))) if value == default => {}
                (None, Some(None)) => {}
                (default, Some(value)) => errors.push(format!(
                    "{env}: the code's default is {default:?}, custom.env says {value:?}"
                )),
            }
        }
        for sub in command.get_subcommands() {
            check(sub, documented, errors);
        }
    }
    let mut errors = Vec::new();
    check(&xivo_ha::cli::Cli::command(), &documented, &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");

    // The monitoring settings: the listed values are the code's defaults.
    let file = xivo_ha::config::EnvFile::load(&repo().join("env/custom.env")).unwrap();
    let listed: xivo_ha::monit::MonitSettings =
        xivo_ha::config::from_env(xivo_ha::monit::MonitSettings::PREFIX, &file).unwrap();
    assert_eq!(listed, xivo_ha::monit::MonitSettings::default());
}

// ---------------------------------------------------------------------------------------------
// compose

/// `docker-compose config` of compose/docker-compose.yml, on env/custom.env.
fn compose_config(extra: &[&str]) -> Output {
    Command::new("docker-compose")
        .env("XIVO_HA_CUSTOM_ENV", repo().join("env/custom.env"))
        .env_remove("XIVO_HA_VERSION")
        .arg("-f")
        .arg(repo().join("compose/docker-compose.yml"))
        .args(extra)
        .arg("config")
        .output()
        .expect("docker-compose runs")
}

/// The services of `docker-compose config`'s output, each as its block of YAML.
fn services(yaml: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_services = false;
    for line in yaml.lines() {
        if !line.starts_with(' ') {
            in_services = line == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
            let name = name.trim_end_matches(':').to_owned();
            out.insert(name.clone(), String::new());
            current = Some(name);
        } else if let Some(name) = &current {
            let block = out.get_mut(name).unwrap();
            block.push_str(line.trim());
            block.push('\n');
        }
    }
    out
}

#[test]
fn the_compose_file_is_valid_and_says_what_the_readme_says() {
    let output = compose_config(&["--profile", "xc"]);
    assert_success(&output);
    let all = services(&stdout(&output));
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        vec!["db-replic", "ha-monitor"]
    );
    let monitor = &all["ha-monitor"];
    let replic = &all["db-replic"];
    for (service, block, container, command) in [
        (
            "ha-monitor",
            monitor,
            xivo_ha::monit::checks::MONITOR_CONTAINER,
            "monitor",
        ),
        (
            "db-replic",
            replic,
            xivo_ha::monit::checks::DB_REPLIC_CONTAINER,
            "db-replic",
        ),
    ] {
        // The monit checks name the containers: the names must agree.
        assert!(
            block.contains(&format!("container_name: {container}\n")),
            "{service}:\n{block}"
        );
        assert!(
            block.contains(&format!("command:\n- {command}\n")),
            "{service}:\n{block}"
        );
        for line in [
            "image: xivo-ha:latest\n",
            "network_mode: host\n",
            "restart: always\n",
            "XIVO_HA_DB: host=/var/run/postgresql user=postgres dbname=asterisk\n",
            "- /etc/xivo:/etc/xivo:ro\n",
        ] {
            assert!(block.contains(line), "{service} lacks {line:?}:\n{block}");
        }
    }
    for line in [
        "- NET_RAW\n",
        "- /var/run/docker.sock:/var/run/docker.sock:rw\n",
        "- /var/lib/asterisk:/var/lib/asterisk:ro\n",
        "- /etc/asterisk:/etc/asterisk:ro\n",
        "- /root/.ssh:/root/.ssh:rw\n",
        "- /var/lib/xivo:/var/lib/xivo:rw\n",
    ] {
        assert!(
            monitor.contains(line),
            "ha-monitor lacks {line:?}:\n{monitor}"
        );
    }
    // DB Replic only with the xc profile (compose's `config` prints every service anyway).
    assert!(replic.contains("profiles:\n- xc\n"), "{replic}");
    assert!(!monitor.contains("profiles:"), "{monitor}");
    // DB Replic gets neither the Docker socket nor raw sockets nor ssh keys.
    for absent in ["docker.sock", "NET_RAW", "/root/.ssh:"] {
        assert!(
            !replic.contains(absent),
            "db-replic has {absent}:\n{replic}"
        );
    }

    // The image tag follows XIVO_HA_VERSION.
    let output = Command::new("docker-compose")
        .env("XIVO_HA_CUSTOM_ENV", repo().join("env/custom.env"))
        .env("XIVO_HA_VERSION", "9.8.7")
        .arg("-f")
        .arg(repo().join("compose/docker-compose.yml"))
        .arg("config")
        .output()
        .unwrap();
    assert!(stdout(&output).contains("image: xivo-ha:9.8.7\n"));

    // A missing settings file is refused, naming it.
    let output = Command::new("docker-compose")
        .env("XIVO_HA_CUSTOM_ENV", "/nonexistent/custom.env")
        .arg("-f")
        .arg(repo().join("compose/docker-compose.yml"))
        .arg("config")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("/nonexistent/custom.env"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn xivo_service_adds_the_xc_profile_when_xc_is_enabled() {
    let dir = tempfile::tempdir().unwrap();
    // A docker compose that prints its arguments: what xivo-service would run.
    let fake = dir.path().join("fake-compose");
    std::fs::write(&fake, "#!/bin/sh\necho \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let flag = dir.path().join("xc_enabled");
    let run = |action: &str| {
        Command::new(repo().join("compose/xivo-service"))
            .arg(action)
            .env("DOCKER_COMPOSE", &fake)
            .env(
                "XIVO_HA_COMPOSE_FILE",
                repo().join("compose/docker-compose.yml"),
            )
            .env("XIVO_HA_CUSTOM_ENV", repo().join("env/custom.env"))
            .env("XC_ENABLED_FLAG", &flag)
            .output()
            .unwrap()
    };
    let output = run("start");
    assert_success(&output);
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].ends_with("up -d") && !lines[0].contains("--profile"),
        "{lines:?}"
    );
    assert!(lines[0].contains("--env-file") && lines[0].contains("--project-name xivo-ha"));
    assert!(lines[1].contains("--profile xc") && lines[1].ends_with("rm --stop --force db-replic"));

    std::fs::write(&flag, "").unwrap();
    let output = run("start");
    assert_success(&output);
    assert_eq!(stdout(&output).lines().count(), 1);
    assert!(
        stdout(&output).contains("--profile xc") && stdout(&output).trim_end().ends_with("up -d")
    );

    let output = run("bogus");
    assert_eq!(output.status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// The local image build

/// Removes the test's images and containers, even when the test fails.
struct DockerCleanup {
    repository: String,
    containers: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for container in &self.containers {
            let _ = Command::new("docker")
                .args(["rm", "-f", container])
                .output();
        }
        let version = env!("CARGO_PKG_VERSION");
        let _ = Command::new("docker")
            .args(["rmi", "-f"])
            .arg(format!("{}:{version}", self.repository))
            .arg(format!("{}:latest", self.repository))
            .output();
    }
}

#[test]
fn the_local_image_runs_the_binary_its_classic_names_rsync_and_ssh() {
    let unique = format!("xivo-ha-test-pkg-{}", std::process::id());
    let mut cleanup = DockerCleanup {
        repository: unique.clone(),
        containers: Vec::new(),
    };
    // The test binary stands in for the release one: same packaging, no second cargo build.
    let output = Command::new(repo().join("docker/build-local.sh"))
        .arg("--binary")
        .arg(xivo_ha_bin())
        .arg("--repository")
        .arg(&unique)
        .output()
        .unwrap();
    assert_success(&output);
    let version = env!("CARGO_PKG_VERSION");
    assert!(stdout(&output).contains(&format!("{unique}:{version} (also {unique}:latest)")));
    let run = |name: &str, args: &[&str]| -> Output {
        Command::new("docker")
            .args(["run", "--rm", "--network", "none", "--name", name])
            .arg(format!("{unique}:{version}"))
            .args(args)
            .output()
            .unwrap()
    };
    let mut checks: Vec<(&[&str], &str)> = vec![
        (&["xivo-ha", "--help"], "monitoring-update"),
        (
            &["xivo-monitoring-update", "--help"],
            "Regenerate monit's checks",
        ),
        (&["/usr/bin/rsync", "--version"], "rsync  version"),
        (&["/usr/bin/ssh", "-V"], "OpenSSH"),
        // The monitor's hooks run with /bin/sh -c.
        (&["/bin/sh", "-c", "echo hook ran"], "hook ran"),
        (
            &[
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                "/tmp/key",
            ],
            "",
        ),
    ];
    let link_args: Vec<[&str; 2]> = xivo_ha::links::LINKS
        .iter()
        .map(|link| [link.name, "--help"])
        .collect();
    for args in &link_args {
        checks.push((args, ""));
    }
    for (i, (args, expected)) in checks.iter().enumerate() {
        let name = format!("{unique}-{i}");
        cleanup.containers.push(name.clone());
        let output = run(&name, args);
        let all = format!("{}{}", stdout(&output), stderr(&output));
        if let Some(link) = xivo_ha::links::LINKS.iter().find(|l| l.name == args[0]) {
            // A classic name runs its subcommand, whose help shows XiVO's usage.
            assert!(output.status.success(), "{args:?}: {all}");
            let usage = format!("Usage: {}", link.usage_line());
            assert!(all.contains(&usage), "{args:?}: {all}");
        } else {
            assert!(output.status.success(), "{args:?}: {all}");
            assert!(all.contains(expected), "{args:?}: {all}");
        }
    }
    // Both tags name the same image.
    let ids: Vec<String> = [version, "latest"]
        .iter()
        .map(|tag| {
            let output = Command::new("docker")
                .args(["image", "inspect", "--format", "{{.Id}}"])
                .arg(format!("{unique}:{tag}"))
                .output()
                .unwrap();
            assert_success(&output);
            stdout(&output)
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
}
