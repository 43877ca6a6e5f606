//! Compiling a tool's schemas, caching the result, and describing
//! validation failures without payload.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use jsonschema::error::ValidationErrorKind;
use jsonschema::{PatternOptions, Retrieve, Uri, ValidationError, Validator};
use portcullis_plugin_sdk::Value;

use crate::digest;

/// Backtracking budget of one `pattern` match (fancy-regex; its default is
/// 1,000,000). Exceeding it is a validation error, so the message is
/// refused, not let through.
const BACKTRACK_LIMIT: usize = 100_000;

/// Cached definitions kept at most; the cache is emptied when it would grow
/// past this (a server listing this many tools is unusual; recompiling is
/// only slower, never wrong).
const MAX_CACHED: usize = 1024;

/// Errors collected from one validation at most.
const MAX_COLLECTED: usize = 64;

/// Refuses every remote resource: a `$ref` (or `$schema`) that is not in
/// the schema itself or one of the bundled meta-schemas fails compilation.
struct NoRemote;

impl Retrieve for NoRemote {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(
            format!("remote reference {uri} is not fetched (schema-guard resolves no remote $ref)")
                .into(),
        )
    }
}

/// Compiles one schema: `$schema` selects the draft (2020-12 when absent),
/// the schema must itself be valid for its draft, and nothing is fetched.
pub fn compile(schema: &Value) -> Result<Validator, String> {
    jsonschema::options()
        .with_retriever(NoRemote)
        .with_pattern_options(PatternOptions::fancy_regex().backtrack_limit(BACKTRACK_LIMIT))
        .build(schema)
        .map_err(|e| shorten(&e.to_string(), 300))
}

/// A tool definition, compiled.
pub struct Compiled {
    /// The pin digest of the definition ([`digest::tool_digest`]).
    pub digest: String,
    /// The `inputSchema` validator, or why there is none (fail closed).
    pub input: Result<Validator, String>,
    /// The `outputSchema` validator, or why it cannot be built; `None` when
    /// the tool declares no `outputSchema`.
    pub output: Option<Result<Validator, String>>,
}

impl Compiled {
    /// Compiles the definition text the host returned.
    pub fn from_text(text: &str) -> Compiled {
        match serde_json::from_str::<Value>(text) {
            Ok(def) => Compiled::from_value(&def),
            Err(_) => Compiled {
                digest: digest::tool_digest(&Value::Null),
                input: Err("the tool definition is not JSON".into()),
                output: None,
            },
        }
    }

    /// Compiles a parsed definition.
    pub fn from_value(def: &Value) -> Compiled {
        let digest = digest::tool_digest(def);
        if !def.is_object() {
            return Compiled {
                digest,
                input: Err("the tool definition is not a JSON object".into()),
                output: None,
            };
        }
        let input = match def.get("inputSchema") {
            Some(schema) => {
                compile(schema).map_err(|e| format!("inputSchema is not a valid schema: {e}"))
            }
            None => Err("the tool definition has no inputSchema".into()),
        };
        let output = def.get("outputSchema").map(|schema| {
            compile(schema).map_err(|e| format!("outputSchema is not a valid schema: {e}"))
        });
        Compiled {
            digest,
            input,
            output,
        }
    }
}

struct Entry {
    /// The catalog revision of the definition, when the source has them.
    revision: Option<u64>,
    /// The exact definition text the validators were compiled from.
    text: String,
    compiled: Arc<Compiled>,
}

/// server → tool → the last definition seen and its compilation.
static CACHE: LazyLock<Mutex<HashMap<String, HashMap<String, Entry>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The compilation of `text`, the current definition of `tool` on
/// `server`, from the cache when the same text was compiled before.
///
/// The cache key is (server, tool, definition): a hit needs the definition
/// text to be byte-for-byte the one compiled, which is both stricter and
/// cheaper per call than hashing it. A changed definition replaces the
/// entry.
pub fn cached(server: &str, tool: &str, text: &str) -> Arc<Compiled> {
    if let Some(hit) = lookup(server, tool, |e| e.text == text) {
        return hit;
    }
    store(server, tool, None, text)
}

/// The compilation of the definition of `tool` on `server` at catalog
/// revision `revision`: from the cache when that revision was compiled
/// before, else `fetch`ed (`None` when the tool is gone) and compiled. A
/// revision names one definition text, so no text crosses from the host
/// while the revision stays the same.
pub fn cached_at(
    server: &str,
    tool: &str,
    revision: u64,
    fetch: impl FnOnce() -> Option<String>,
) -> Option<Arc<Compiled>> {
    if let Some(hit) = lookup(server, tool, |e| e.revision == Some(revision)) {
        return Some(hit);
    }
    // Fetched after the revision was read: if the definition changed in
    // between, this newer text is stored under the older revision, and the
    // next call (seeing the newer revision) fetches it again. An older text
    // can never be stored under a newer revision.
    let text = fetch()?;
    Some(store(server, tool, Some(revision), &text))
}

fn store(server: &str, tool: &str, revision: Option<u64>, text: &str) -> Arc<Compiled> {
    // Compile outside the lock (only matters natively, where tests share
    // the cache across threads).
    let compiled = Arc::new(Compiled::from_text(text));
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let size: usize = cache.values().map(HashMap::len).sum();
    if size >= MAX_CACHED {
        cache.clear();
    }
    cache.entry(server.to_owned()).or_default().insert(
        tool.to_owned(),
        Entry {
            revision,
            text: text.to_owned(),
            compiled: compiled.clone(),
        },
    );
    compiled
}

fn lookup(server: &str, tool: &str, current: impl Fn(&Entry) -> bool) -> Option<Arc<Compiled>> {
    let cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let entry = cache.get(server)?.get(tool)?;
    current(entry).then(|| entry.compiled.clone())
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

/// One failing location: where in the instance, which keyword, and where in
/// the schema. Never the instance's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON Pointer into the instance (`""` is the whole instance). For
    /// `required`, the missing member; for `additionalProperties` and
    /// `unevaluatedProperties`, the unexpected member.
    pub path: String,
    /// The schema keyword that failed (`type`, `required`, …).
    pub keyword: String,
    /// JSON Pointer into the schema (from the schema, never the instance).
    pub schema_path: String,
}

/// Why an instance does not match its schema.
#[derive(Debug)]
pub struct Failure {
    /// Distinct problems, in the validator's order.
    pub problems: Vec<Problem>,
    /// True when more errors than [`MAX_COLLECTED`] were reported.
    pub truncated: bool,
}

impl Failure {
    /// Number of problems for the `errors` count.
    pub fn count(&self) -> u64 {
        self.problems.len() as u64
    }

    /// `/a: "type", /b: "required"`: at most `max` problems, then
    /// `and N more`. Paths are shortened; values never appear.
    pub fn public_list(&self, max: usize) -> String {
        let mut out = String::new();
        for (i, p) in self.problems.iter().take(max).enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&display_path(&p.path));
            out.push_str(": \"");
            out.push_str(&shorten(&p.keyword, 40));
            out.push('"');
        }
        let more = self.problems.len().saturating_sub(max);
        if more > 0 || self.truncated {
            let plus = if self.truncated { "+" } else { "" };
            out.push_str(&format!(", and {more}{plus} more"));
        }
        out
    }

    /// Like [`Failure::public_list`], with the schema location of each.
    pub fn private_list(&self, max: usize) -> String {
        let mut out = String::new();
        for (i, p) in self.problems.iter().take(max).enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            out.push_str(&format!(
                "{}: \"{}\" (schema {})",
                display_path(&p.path),
                shorten(&p.keyword, 40),
                display_path(&shorten(&p.schema_path, 200)),
            ));
        }
        let more = self.problems.len().saturating_sub(max);
        if more > 0 || self.truncated {
            let plus = if self.truncated { "+" } else { "" };
            out.push_str(&format!("; and {more}{plus} more"));
        }
        out
    }
}

/// Validates `instance`: `Ok` when valid, otherwise the failing locations.
/// The common valid case costs one `is_valid` pass and no allocation.
pub fn check(validator: &Validator, instance: &Value) -> Result<(), Failure> {
    if validator.is_valid(instance) {
        return Ok(());
    }
    let mut problems: Vec<Problem> = Vec::new();
    let mut truncated = false;
    for (n, error) in validator.iter_errors(instance).enumerate() {
        if n == MAX_COLLECTED {
            truncated = true;
            break;
        }
        for p in problems_of(&error) {
            if !problems.contains(&p) {
                problems.push(p);
            }
        }
    }
    if problems.is_empty() {
        // `is_valid` and `iter_errors` disagreed: still refuse.
        problems.push(Problem {
            path: String::new(),
            keyword: "invalid".into(),
            schema_path: String::new(),
        });
    }
    Err(Failure {
        problems,
        truncated,
    })
}

/// The problems one error stands for. Uses only the error's locations, its
/// keyword, and member names (`required` names come from the schema;
/// unexpected property names are keys, like the segments of any path).
/// Never `Display` of the error, which quotes values.
fn problems_of(error: &ValidationError<'_>) -> Vec<Problem> {
    let path = error.instance_path().as_str();
    let keyword = match error.kind() {
        // The library's name for "the schema here is `false`".
        ValidationErrorKind::FalseSchema => "false".to_owned(),
        kind => kind.keyword().to_owned(),
    };
    let schema_path = error.schema_path().as_str().to_owned();
    let member = |name: &str| Problem {
        path: format!("{path}/{}", escape_pointer(name)),
        keyword: keyword.clone(),
        schema_path: schema_path.clone(),
    };
    match error.kind() {
        ValidationErrorKind::Required {
            property: Value::String(name),
        } => vec![member(name)],
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            unexpected.iter().map(|name| member(name)).collect()
        }
        _ => vec![Problem {
            path: path.to_owned(),
            keyword,
            schema_path,
        }],
    }
}

/// Escapes one JSON Pointer segment (`~` → `~0`, `/` → `~1`).
fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A pointer for messages: `(root)` for the whole instance, long ones
/// shortened.
fn display_path(path: &str) -> String {
    if path.is_empty() {
        "(root)".into()
    } else {
        shorten(path, 120)
    }
}

/// At most `max` bytes of `s` (on a character boundary), `…` when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
