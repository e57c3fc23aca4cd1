//! The OpenAPI 3.0 document and the offline docs page, both generated from the catalog.

use serde_json::{json, Map, Value};

use crate::catalog::{Catalog, Template};

/// JSON Schema of a result column of ClickHouse type `ty`.
fn column_schema(ty: &str) -> Value {
    let inner = ty
        .trim()
        .strip_prefix("Nullable(")
        .or_else(|| ty.trim().strip_prefix("LowCardinality("))
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(ty.trim());
    let nullable = ty.trim().starts_with("Nullable(");
    let mut schema = if inner.starts_with("Array(") {
        let item = inner
            .strip_prefix("Array(")
            .and_then(|t| t.strip_suffix(')'))
            .unwrap_or("String");
        json!({"type": "array", "items": column_schema(item)})
    } else if inner.starts_with("Int") || inner.starts_with("UInt") {
        json!({"type": "integer"})
    } else if inner.starts_with("Float") || inner.starts_with("Decimal") {
        json!({"type": "number"})
    } else if inner == "Bool" {
        json!({"type": "boolean"})
    } else if inner.starts_with("Date") {
        json!({"type": "string", "description": inner})
    } else if inner.starts_with("Map(") || inner.starts_with("Tuple(") {
        json!({"type": "object"})
    } else {
        json!({"type": "string"})
    };
    if nullable {
        schema["nullable"] = Value::Bool(true);
    }
    schema
}

fn operation(template: &Template, latest: bool) -> Value {
    let meta = template.meta();
    let mut parameters: Vec<Value> = meta
        .params
        .iter()
        .map(|(name, spec)| {
            let mut schema = spec.param_type().json_schema();
            if let Some(allowed) = &spec.allowed {
                match schema.get_mut("items") {
                    Some(items) => items["enum"] = Value::Array(allowed.clone()),
                    None => schema["enum"] = Value::Array(allowed.clone()),
                }
            }
            if let Some(default) = &spec.default {
                schema["default"] = default.clone();
            }
            if let Some(min) = spec.min {
                schema["minimum"] = json!(min);
            }
            if let Some(max) = spec.max {
                schema["maximum"] = json!(max);
            }
            if let Some(n) = spec.min_items {
                schema["minItems"] = json!(n);
            }
            if let Some(n) = spec.max_items {
                schema["maxItems"] = json!(n);
            }
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": spec.required,
                "description": spec.description,
                "schema": schema,
            });
            if schema_is_array(&parameter) {
                parameter["style"] = json!("form");
                parameter["explode"] = json!(true);
            }
            parameter
        })
        .collect();
    parameters.push(json!({
        "name": "format", "in": "query", "required": false,
        "description": "Output format (or use the Accept header)",
        "schema": {"type": "string", "enum": ["json", "csv", "tsv", "ndjson"], "default": "json"}
    }));
    let row_properties: Map<String, Value> = meta
        .columns
        .iter()
        .map(|(name, ty)| (name.clone(), column_schema(ty)))
        .collect();
    let json_result = json!({
        "type": "object",
        "required": ["query", "version", "meta", "data", "rows", "statistics"],
        "properties": {
            "query": {"type": "string"},
            "version": {"type": "integer"},
            "meta": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "type": {"type": "string"}}}},
            "data": {"type": "array", "items": {"type": "object", "properties": row_properties}},
            "rows": {"type": "integer"},
            "statistics": {"type": "object", "properties": {
                "elapsed_ms": {"type": "number"},
                "server_elapsed_ms": {"type": "number", "nullable": true},
                "rows_read": {"type": "integer"},
                "bytes_read": {"type": "integer"}
            }}
        }
    });
    let suffix = if latest {
        String::new()
    } else {
        format!("_v{}", template.version())
    };
    let mut op = json!({
        "operationId": format!("{}{}", template.name(), suffix),
        "summary": first_line(&meta.description),
        "description": format!("{}\n\nRoles: {}. Cache TTL {} s, at most {} rows, {} s.",
            meta.description, meta.roles.join(", "), meta.cache_ttl_secs, meta.max_rows, meta.max_execution_secs),
        "tags": [template.name()],
        "parameters": parameters,
        "responses": {
            "200": {"description": "The result", "content": {
                "application/json": {"schema": json_result},
                "text/csv": {"schema": {"type": "string"}},
                "text/tab-separated-values": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}}
            }},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "429": {"$ref": "#/components/responses/Error"},
            "503": {"$ref": "#/components/responses/Error"}
        }
    });
    if meta.deprecated.is_some() {
        op["deprecated"] = Value::Bool(true);
    }
    op
}

fn schema_is_array(parameter: &Value) -> bool {
    parameter["schema"]["type"] == "array"
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// The OpenAPI 3.0.3 document: one operation per template version, and one for each latest.
pub fn document(catalog: &Catalog) -> Value {
    let mut paths = Map::new();
    for (name, versions) in catalog.names() {
        for (index, template) in versions.values().enumerate() {
            paths.insert(
                format!("/v1/queries/{name}/v{}", template.version()),
                json!({"get": operation(template, false)}),
            );
            if index + 1 == versions.len() {
                paths.insert(
                    format!("/v1/queries/{name}"),
                    json!({"get": operation(template, true)}),
                );
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "chgate query endpoints",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Versioned, parameterized SQL templates over ClickHouse, served as endpoints."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
                }}}
            },
            "responses": {
                "Error": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        }
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A self-contained HTML page: every template, its versions, parameters and example calls.
pub fn docs_page(catalog: &Catalog) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>chgate query endpoints</title>\
         <style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
         code,pre{font:13px ui-monospace,monospace;background:#f4f4f4;padding:.1rem .3rem;border-radius:3px}\
         pre{padding:.6rem;overflow:auto}table{border-collapse:collapse;width:100%;margin:.5rem 0}\
         td,th{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}\
         .dep{color:#a33}nav a{margin-right:.8rem}</style></head><body>\
         <h1>chgate query endpoints</h1><p>Authenticate with <code>Authorization: Bearer &lt;key&gt;</code>. \
         Results: <code>format=json|csv|tsv|ndjson</code>. Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>.</p><nav>",
    );
    for (name, _) in catalog.names() {
        html.push_str(&format!("<a href=\"#{0}\">{0}</a>", escape(name)));
    }
    html.push_str("</nav>");
    for (name, versions) in catalog.names() {
        html.push_str(&format!("<h2 id=\"{0}\">{0}</h2>", escape(name)));
        for template in versions.values().rev() {
            let meta = template.meta();
            html.push_str(&format!("<h3>v{}", template.version()));
            if let Some(d) = &meta.deprecated {
                html.push_str(&format!(
                    " <span class=\"dep\">deprecated{}{}</span>",
                    d.sunset
                        .map(|s| format!(", sunset {s}"))
                        .unwrap_or_default(),
                    d.successor
                        .as_ref()
                        .map(|s| format!(", use {}", escape(s)))
                        .unwrap_or_default()
                ));
            }
            html.push_str(&format!(
                "</h3><p><code>GET /v1/queries/{}/v{}</code></p><p>{}</p><p>Roles: {}. Cache {} s; at most {} rows and {} s.</p>",
                escape(name),
                template.version(),
                escape(&meta.description).replace('\n', "<br>"),
                escape(&meta.roles.join(", ")),
                meta.cache_ttl_secs,
                meta.max_rows,
                meta.max_execution_secs
            ));
            if !meta.params.is_empty() {
                html.push_str("<table><tr><th>parameter</th><th>type</th><th>rules</th><th>description</th></tr>");
                for (param, spec) in &meta.params {
                    let mut rules = Vec::new();
                    if spec.required {
                        rules.push("required".to_string());
                    }
                    if let Some(d) = &spec.default {
                        rules.push(format!("default {d}"));
                    }
                    if let Some(a) = &spec.allowed {
                        rules.push(format!(
                            "one of {}",
                            a.iter()
                                .map(Value::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    if let Some(m) = spec.min {
                        rules.push(format!("≥ {m}"));
                    }
                    if let Some(m) = spec.max {
                        rules.push(format!("≤ {m}"));
                    }
                    if let (Some(a), Some(b)) = (spec.min_items, spec.max_items) {
                        rules.push(format!("{a}–{b} items"));
                    }
                    html.push_str(&format!(
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(param),
                        escape(&spec.param_type().clickhouse()),
                        escape(&rules.join("; ")),
                        escape(&spec.description)
                    ));
                }
                html.push_str("</table>");
            }
            if !meta.columns.is_empty() {
                let cols: Vec<String> = meta
                    .columns
                    .iter()
                    .map(|(c, t)| format!("<code>{}</code> {}", escape(c), escape(t)))
                    .collect();
                html.push_str(&format!("<p>Columns: {}</p>", cols.join(", ")));
            }
            for example in &meta.examples {
                let query: Vec<String> = example
                    .params
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string())
                        )
                    })
                    .collect();
                html.push_str(&format!(
                    "<p>{}:</p><pre>curl -H 'Authorization: Bearer $KEY' '/v1/queries/{}/v{}?{}'</pre>",
                    escape(&example.name),
                    escape(name),
                    template.version(),
                    escape(&query.join("&"))
                ));
            }
        }
    }
    html.push_str("</body></html>");
    html
}
