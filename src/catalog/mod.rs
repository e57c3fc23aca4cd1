//! The query catalog: every template of `queries/`, loaded and fully checked at start-up (a broken
//! template stops the start with file:line), reloadable atomically (a broken new catalog is
//! rejected and the old one kept).

pub mod params;
pub mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use self::params::{ParamType, ParamValue};
use self::template::{TemplateError, TemplateFile};
use crate::sql::guard::{self, Policy};

/// A checked template version.
#[derive(Debug)]
pub struct Template {
    pub file: TemplateFile,
    /// The guard policy of this version (the analytics database plus declared tables).
    pub policy: Policy,
}

impl Template {
    pub fn name(&self) -> &str {
        &self.file.name
    }
    pub fn version(&self) -> u32 {
        self.file.version
    }
    pub fn meta(&self) -> &template::Meta {
        &self.file.meta
    }
}

/// A rendered statement, ready to run.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub sql: String,
    /// Values for the statement's `{name:Type}` placeholders.
    pub bindings: Vec<(String, ParamValue)>,
    /// Every parameter's effective value (caller's, default, or null), for caching and audit.
    pub values: BTreeMap<String, Value>,
    /// `values` as JSON text (keys sorted): the call's identity in caches.
    pub values_json: String,
    /// Tables the statement reads, as `database.table`.
    pub tables: BTreeSet<String>,
}

/// Why a call's parameters are not acceptable (a 400 naming the parameter and the rule).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{param}: {rule}")]
pub struct ParamError {
    pub param: String,
    pub rule: String,
}

/// All templates, by name then version.
pub struct Catalog {
    templates: BTreeMap<String, BTreeMap<u32, Arc<Template>>>,
    env: Environment<'static>,
    pub dir: PathBuf,
    /// Statements that passed the guard, by template and text: a template renders to one of a few texts
    /// (values are bound, not rendered), so each is parsed once, not on every call.
    guarded: moka::sync::Cache<String, Arc<guard::Checked>>,
    /// Rendered statements by template and parameter values: the same call renders the same text,
    /// and repeated calls (dashboards, cache hits) skip the template engine.
    rendered: moka::sync::Cache<String, Arc<Rendered>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Catalog {
    /// Loads and checks every `queries/<name>/v<N>.sql`; all problems are reported together.
    pub fn load(dir: &Path, database: &str) -> Result<Self, Vec<TemplateError>> {
        let mut errors = Vec::new();
        let mut files = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                return Err(vec![TemplateError {
                    file: dir.display().to_string(),
                    line: 0,
                    message: format!("cannot read the template directory: {e}"),
                }]);
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .flat_map(|d| {
                std::fs::read_dir(d)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .map(|e| e.path())
            })
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        paths.sort();
        let mut fragments: BTreeMap<String, Fragment> = BTreeMap::new();
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    errors.push(TemplateError {
                        file: path.display().to_string(),
                        line: 0,
                        message: format!("cannot read: {e}"),
                    });
                    continue;
                }
            };
            if let Some(key) = Fragment::key(&path) {
                fragments.insert(key, Fragment { path, body: text });
                continue;
            }
            match TemplateFile::parse(&path, &text) {
                Ok(file) => files.push(file),
                Err(e) => errors.push(e),
            }
        }
        errors.extend(inherit_params(&mut files));
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_function("invalid", invalid);
        for (key, fragment) in &fragments {
            if let Err(e) = env.add_template_owned(key.clone(), fragment.body.clone()) {
                errors.push(fragment.error(
                    e.line().unwrap_or(1),
                    format!("template syntax: {}", e.detail().unwrap_or("invalid")),
                ));
            }
        }
        for file in &files {
            errors.extend(check_fragments(file, &fragments));
        }
        let mut templates: BTreeMap<String, BTreeMap<u32, Arc<Template>>> = BTreeMap::new();
        for file in files {
            if let Err(e) = env.add_template_owned(file.key(), file.body.clone()) {
                errors.push(file.error(
                    e.line().unwrap_or(1),
                    format!("template syntax: {}", e.detail().unwrap_or("invalid")),
                ));
                continue;
            }
            let mut policy = Policy::database(database);
            for (db, table) in template::extra_tables(&file.meta) {
                policy.tables.insert((db, table));
            }
            policy.settings = ALLOWED_SETTINGS
                .iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<_>>()
                .into();
            templates
                .entry(file.name.clone())
                .or_default()
                .insert(file.version, Arc::new(Template { file, policy }));
        }
        let catalog = Self {
            guarded: moka::sync::Cache::new(10_000),
            rendered: moka::sync::Cache::new(10_000),
            templates,
            env,
            dir: dir.to_path_buf(),
        };
        for template in catalog.all() {
            errors.extend(catalog.check(template));
        }
        for (name, versions) in &catalog.templates {
            for template in versions.values() {
                if let Some(successor) = template
                    .meta()
                    .deprecated
                    .as_ref()
                    .and_then(|d| d.successor.as_ref())
                {
                    let exists = successor
                        .strip_prefix('v')
                        .and_then(|v| v.parse::<u32>().ok())
                        .is_some_and(|v| versions.contains_key(&v));
                    if !exists {
                        errors.push(template.file.error(
                            0,
                            format!(
                                "deprecated.successor {successor:?} is not a version of {name}"
                            ),
                        ));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(catalog)
        } else {
            Err(errors)
        }
    }

    /// Like [`Catalog::load`], with every problem listed in one error.
    pub fn load_or_explain(dir: &Path, database: &str) -> anyhow::Result<Self> {
        Self::load(dir, database).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!(
                "the query templates have errors (see chgate check):\n  {}",
                list.join("\n  ")
            )
        })
    }

    /// Every template version.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Template>> {
        self.templates.values().flat_map(|v| v.values())
    }

    /// Names with their versions, in order.
    pub fn names(&self) -> impl Iterator<Item = (&String, &BTreeMap<u32, Arc<Template>>)> {
        self.templates.iter()
    }

    /// A version (`None`: the latest).
    pub fn get(&self, name: &str, version: Option<u32>) -> Option<&Arc<Template>> {
        let versions = self.templates.get(name)?;
        match version {
            Some(v) => versions.get(&v),
            None => versions.values().next_back(),
        }
    }

    pub fn latest_version(&self, name: &str) -> Option<u32> {
        self.templates.get(name)?.keys().next_back().copied()
    }

    /// Validates a call's parameters and renders the statement.
    pub fn render(
        &self,
        template: &Template,
        input: &serde_json::Map<String, Value>,
    ) -> Result<Rendered, RenderError> {
        let now = chrono::Utc::now();
        let meta = template.meta();
        if let Some(unknown) = input.keys().find(|k| !meta.params.contains_key(*k)) {
            let known: Vec<&str> = meta.params.keys().map(String::as_str).collect();
            return Err(RenderError::Param(ParamError {
                param: unknown.clone(),
                rule: format!(
                    "unknown parameter (this template takes: {})",
                    known.join(", ")
                ),
            }));
        }
        let mut values = BTreeMap::new();
        let mut typed = BTreeMap::new();
        for (name, spec) in &meta.params {
            let raw = match input.get(name).filter(|v| !v.is_null()) {
                Some(v) => Some(v),
                None if spec.required => {
                    return Err(RenderError::Param(ParamError {
                        param: name.clone(),
                        rule: "is required".into(),
                    }));
                }
                None => spec.default.as_ref(),
            };
            match raw {
                Some(raw) => {
                    let value = spec.coerce(raw, now).map_err(|rule| {
                        RenderError::Param(ParamError {
                            param: name.clone(),
                            rule,
                        })
                    })?;
                    values.insert(name.clone(), value.to_json());
                    typed.insert(name.clone(), value);
                }
                None => {
                    values.insert(name.clone(), Value::Null);
                }
            }
        }
        let values_json = serde_json::to_string(&values).unwrap_or_default();
        let call = format!("{}\n{values_json}", template.file.key());
        if let Some(rendered) = self.rendered.get(&call) {
            return Ok(Rendered::clone(&rendered));
        }
        let sql = self
            .env
            .get_template(&template.file.key())
            .and_then(|t| t.render(&values))
            .map_err(|e| {
                if let Some(rule) = raised_param_error(&e) {
                    return RenderError::Param(rule);
                }
                RenderError::Template(
                    template
                        .file
                        .error(e.line().unwrap_or(1), format!("rendering failed: {e}")),
                )
            })?;
        // Keyed by the template too: each has its own policy (extra tables).
        let memo = format!("{}\n{sql}", template.file.key());
        let checked = match self.guarded.get(&memo) {
            Some(checked) => checked,
            None => {
                let checked = Arc::new(
                    guard::check(&sql, &template.policy)
                        .map_err(|e| RenderError::Guard(template.file.error(0, e.to_string())))?,
                );
                self.guarded.insert(memo, checked.clone());
                checked
            }
        };
        let mut bindings = Vec::new();
        let mut bound = BTreeSet::new();
        for placeholder in &checked.placeholders {
            if !bound.insert(placeholder.name.clone()) {
                continue;
            }
            let Some(value) = typed.get(&placeholder.name) else {
                return Err(RenderError::Param(ParamError {
                    param: placeholder.name.clone(),
                    rule: "has no value, but the query needs one".into(),
                }));
            };
            bindings.push((placeholder.name.clone(), value.clone()));
        }
        let rendered = Rendered {
            sql,
            bindings,
            values,
            values_json,
            tables: checked.tables.clone(),
        };
        self.rendered.insert(call, Arc::new(rendered.clone()));
        Ok(rendered)
    }

    /// Renders the template's examples and a call with defaults only, guarding each result and
    /// checking every placeholder against the declared parameters.
    fn check(&self, template: &Template) -> Vec<TemplateError> {
        let mut errors = Vec::new();
        let meta = template.meta();
        let mut sets: Vec<(String, serde_json::Map<String, Value>)> = meta
            .examples
            .iter()
            .map(|e| (format!("example {:?}", e.name), e.params.clone()))
            .collect();
        if meta.params.values().all(|p| !p.required) {
            sets.push(("the defaults".into(), serde_json::Map::new()));
        }
        if sets.is_empty() {
            errors.push(template.file.error(
                0,
                "a template with required parameters needs at least one example",
            ));
        }
        for (label, params) in sets {
            let rendered = match self.render(template, &params) {
                Ok(r) => r,
                Err(RenderError::Param(e)) => {
                    errors.push(template.file.error(0, format!("{label}: parameter {e}")));
                    continue;
                }
                Err(RenderError::Template(e)) => {
                    errors.push(TemplateError {
                        message: format!("{label}: {}", e.message),
                        ..e
                    });
                    continue;
                }
                Err(RenderError::Guard(e)) => {
                    errors.push(TemplateError {
                        message: format!("{label}: the rendered SQL is refused: {}", e.message),
                        ..e
                    });
                    continue;
                }
            };
            let (placeholders, _) = crate::sql::placeholders::extract(&rendered.sql);
            for placeholder in placeholders {
                let Some(spec) = meta.params.get(&placeholder.name) else {
                    errors.push(template.file.error(
                        0,
                        format!(
                            "{label}: placeholder {{{}:{}}} is not a declared parameter",
                            placeholder.name, placeholder.ty
                        ),
                    ));
                    continue;
                };
                let declared = spec.param_type();
                if ParamType::parse(&placeholder.ty) != Some(declared) {
                    errors.push(template.file.error(
                        0,
                        format!(
                            "{label}: placeholder {{{}:{}}} does not match the declared type {}",
                            placeholder.name,
                            placeholder.ty,
                            declared.clickhouse()
                        ),
                    ));
                }
            }
        }
        errors
    }
}

/// Gives each template with `params_from` the parameters of the version it names.
fn inherit_params(files: &mut [TemplateFile]) -> Vec<TemplateError> {
    let declared: BTreeMap<String, indexmap::IndexMap<String, params::ParamSpec>> = files
        .iter()
        .filter(|f| f.meta.params_from.is_none())
        .map(|f| (f.key(), f.meta.params.clone()))
        .collect();
    let mut errors = Vec::new();
    for file in files.iter_mut() {
        let Some(source) = file.meta.params_from.clone() else {
            continue;
        };
        let result = match declared.get(&source) {
            Some(params) => file.inherit_params(params),
            None => Err(file.error(
                0,
                format!("params_from {source:?} is not a template version (name/vN) declaring its own parameters"),
            )),
        };
        errors.extend(result.err());
    }
    errors
}

/// `queries/<name>/_<fragment>.sql`: SQL shared by templates, which take it in with
/// `{% include "<name>/_<fragment>.sql" %}`; it renders with the including template's parameters
/// and is checked with each template that includes it. Not an endpoint.
struct Fragment {
    path: PathBuf,
    body: String,
}

impl Fragment {
    /// The name templates include a fragment file by, when `path` is one.
    fn key(path: &Path) -> Option<String> {
        let file = path.file_name()?.to_str()?;
        let dir = path.parent()?.file_name()?.to_str()?;
        let key = format!("{dir}/{file}");
        (file.starts_with('_') && template::is_fragment_key(&key)).then_some(key)
    }

    fn error(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError {
            file: self.path.display().to_string(),
            line,
            message: message.into(),
        }
    }
}

/// The fragments `file` includes (and those they include) exist and print no value of its
/// parameters.
fn check_fragments(
    file: &TemplateFile,
    fragments: &BTreeMap<String, Fragment>,
) -> Vec<TemplateError> {
    let mut errors = Vec::new();
    let mut tainted = file.tainted_params();
    let Ok(includes) = template::check_splicing(&file.body, &mut tainted) else {
        return errors; // reported when the file was parsed
    };
    let mut pending: Vec<(usize, String, Option<&Fragment>)> = includes
        .into_iter()
        .map(|(line, key)| (line, key, None))
        .collect();
    let mut seen = BTreeSet::new();
    while let Some((line, key, from)) = pending.pop() {
        let Some(fragment) = fragments.get(&key) else {
            let message = format!("includes {key:?}, which is not a fragment file");
            errors.push(match from {
                Some(parent) => parent.error(line, message),
                None => file.error(line, message),
            });
            continue;
        };
        if !seen.insert(key) {
            continue;
        }
        match template::check_splicing(&fragment.body, &mut tainted.clone()) {
            Ok(nested) => pending.extend(
                nested
                    .into_iter()
                    .map(|(line, key)| (line, key, Some(fragment))),
            ),
            Err((line, message)) => errors.push(fragment.error(
                line,
                format!("included by {}: {message}", file.path.display()),
            )),
        }
    }
    errors
}

/// `invalid(param, rule)` in a template: the call is refused with a 400 naming the parameter and
/// the rule, for rules that involve several parameters (`filter_values` must have as many items
/// as `filter_steps`).
fn invalid(param: String, rule: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("{param}: {rule}"),
    )
    .with_source(ParamError { param, rule }))
}

/// The [`ParamError`] an `invalid(…)` call raised, however deep in includes.
fn raised_param_error(error: &minijinja::Error) -> Option<ParamError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<ParamError>() {
            return Some(found.clone());
        }
        source = e.source();
    }
    None
}

/// Why a call could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The caller's fault: a 400.
    #[error(transparent)]
    Param(ParamError),
    /// The template's fault (a combination its checks did not cover): a 500, logged.
    #[error(transparent)]
    Template(TemplateError),
    #[error(transparent)]
    Guard(TemplateError),
}

/// Settings a template may set in a `SETTINGS` clause.
pub const ALLOWED_SETTINGS: &[&str] = &[
    "max_threads",
    "join_algorithm",
    "max_bytes_before_external_group_by",
    "max_bytes_before_external_sort",
    "optimize_aggregation_in_order",
    "allow_experimental_analyzer",
    "enable_analyzer",
    "joined_subquery_requires_alias",
    "prefer_column_name_to_alias",
];

/// The catalog in use, swapped atomically on reload.
#[derive(Clone)]
pub struct CatalogHandle {
    current: Arc<ArcSwap<Catalog>>,
    database: Arc<String>,
}

impl CatalogHandle {
    pub fn new(catalog: Catalog, database: &str) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(catalog)),
            database: Arc::new(database.to_string()),
        }
    }

    pub fn get(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// Loads the directory again; on any error the current catalog stays in use.
    pub fn reload(&self) -> Result<usize, Vec<TemplateError>> {
        let dir = self.get().dir.clone();
        match Catalog::load(&dir, &self.database) {
            Ok(catalog) => {
                let count = catalog.all().count();
                self.current.store(Arc::new(catalog));
                metrics::counter!("chgate_catalog_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!(templates = count, "template catalog reloaded");
                Ok(count)
            }
            Err(errors) => {
                metrics::counter!("chgate_catalog_reloads_total", "outcome" => "rejected")
                    .increment(1);
                for e in &errors {
                    tracing::error!(error = %e, "template catalog reload rejected; keeping the previous catalog");
                }
                Err(errors)
            }
        }
    }

    /// Reloads on SIGHUP and when a file under the directory changes (polled every `every`).
    pub fn watch(&self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        let handle = self.clone();
        crate::reload::watch(every, stop, self.get().dir.clone(), move || {
            let _ = handle.reload();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HEADER: &str = "/*---\ndescription = \"x\"\n[params.steps]\ntype = \"Array(String)\"\nrequired = true\n[params.window]\ntype = \"UInt32\"\ndefault = 60\n[[examples]]\nname = \"two steps\"\nparams = { steps = [\"a\", \"b\"] }\n---*/\n";

    fn catalog(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Catalog, Vec<TemplateError>>) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let loaded = Catalog::load(dir.path(), "analytics");
        (dir, loaded)
    }

    fn params(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_fragment_renders_with_the_parameters_of_the_template_that_includes_it() {
        let body = "SELECT count() FROM events\nWHERE {% include \"t/_where.sql\" %}";
        let fragment = "event IN {steps:Array(String)}{% for k in range(steps | length) %} AND {{ k }} >= 0{% endfor %}";
        let (_dir, loaded) = catalog(&[
            ("t/v1.sql", &format!("{HEADER}{body}")),
            ("t/_where.sql", fragment),
        ]);

        let catalog = loaded.unwrap();
        let template = catalog.get("t", None).unwrap();
        let rendered = catalog
            .render(template, &params(json!({"steps": ["a", "b", "c"]})))
            .unwrap();

        assert!(
            rendered
                .sql
                .ends_with("event IN {steps:Array(String)} AND 0 >= 0 AND 1 >= 0 AND 2 >= 0"),
            "{}",
            rendered.sql
        );
        assert_eq!(rendered.bindings.len(), 1);
        assert_eq!(catalog.all().count(), 1, "a fragment is no endpoint");
    }

    #[test]
    fn a_fragment_printing_a_value_of_the_including_template_is_refused_at_its_line() {
        let (dir, loaded) = catalog(&[
            (
                "t/v1.sql",
                &format!("{HEADER}SELECT 1 FROM events WHERE {{% include \"t/_where.sql\" %}}"),
            ),
            ("t/_where.sql", "1 = 1\nAND window = {{ window }}"),
        ]);

        let errors = loaded.unwrap_err();
        let fragment = dir.path().join("t/_where.sql").display().to_string();
        assert!(
            errors.iter().any(|e| e.file == fragment
                && e.line == 2
                && e.message.contains("parameter window")),
            "{errors:?}"
        );
    }

    #[test]
    fn templates_take_in_only_fragments_named_by_a_literal() {
        for include in [
            "{% include \"t/v1.sql\" %}",
            "{% include \"u/_missing.sql\" %}",
            "{% include name %}",
            "{% import \"t/_where.sql\" as w %}",
        ] {
            let (_dir, loaded) = catalog(&[
                (
                    "t/v1.sql",
                    &format!("{HEADER}SELECT 1 FROM events WHERE 1 = 1 {include}"),
                ),
                ("t/_where.sql", "1 = 1"),
            ]);

            let errors = loaded.unwrap_err();
            assert!(
                errors.iter().any(|e| e.message.contains("fragment")),
                "{include}: {errors:?}"
            );
        }
    }

    #[test]
    fn params_from_gives_a_template_the_parameters_of_another_version_first() {
        let sibling = "/*---\ndescription = \"x\"\nparams_from = \"t/v1\"\n[params.limit]\ntype = \"UInt8\"\ndefault = 5\n[[examples]]\nname = \"inherited\"\nparams = { steps = [\"a\"], limit = 2 }\n---*/\n";
        let (_dir, loaded) = catalog(&[
            ("t/v1.sql", &format!("{HEADER}SELECT 1 FROM events")),
            (
                "u/v1.sql",
                &format!("{sibling}SELECT 1 FROM events WHERE event IN {{steps:Array(String)}} LIMIT {{limit:UInt8}}"),
            ),
        ]);
        let printing = format!("{sibling}SELECT {{{{ window }}}} FROM events");
        let (_dir2, refused) = catalog(&[
            ("t/v1.sql", &format!("{HEADER}SELECT 1 FROM events")),
            ("u/v1.sql", &printing),
        ]);

        let catalog = loaded.unwrap();
        let names: Vec<&String> = catalog
            .get("u", None)
            .unwrap()
            .meta()
            .params
            .keys()
            .collect();
        assert_eq!(names, ["steps", "window", "limit"]);
        let errors = refused.unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("parameter window")),
            "{errors:?}"
        );
    }

    #[test]
    fn invalid_refuses_the_call_with_a_parameter_error() {
        let body = "{% if steps | length > 2 %}{{ invalid(\"steps\", \"at most 2 with window\") }}{% endif %}SELECT 1 FROM events";
        let (_dir, loaded) = catalog(&[("t/v1.sql", &format!("{HEADER}{body}"))]);
        let catalog = loaded.unwrap();
        let template = catalog.get("t", None).unwrap();

        let refused = catalog.render(template, &params(json!({"steps": ["a", "b", "c"]})));

        match refused {
            Err(RenderError::Param(e)) => {
                assert_eq!(
                    (e.param.as_str(), e.rule.as_str()),
                    ("steps", "at most 2 with window")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(catalog
            .render(template, &params(json!({"steps": ["a", "b"]})))
            .is_ok());
    }
}
