#!/usr/bin/env python3
"""Checks the monitoring files under dashboards/ against the gateway's source.

    scripts/lib/check-dashboards.py [--src DIR] [--emit-rules FILE] FILE...
    scripts/lib/check-dashboards.py --self-test

Each FILE is a Grafana dashboard (*.json) or a Prometheus rule file (*.yml,
*.yaml). Every PromQL expression in it (panel targets, template variables and
annotations of a dashboard; `expr:` of a rule file) is scanned for metric names,
and each name must be one of:

  - a `chgate_*` name that appears in the gateway's source (--src, default
    src/ of this checkout); a histogram (recorded with `histogram!`) only with
    its `_bucket`, `_sum` or `_count` suffix, as the exporter renders it;
  - a name the dashboards show ahead of the code that will export it
    (PLANNED below), until it appears in the source;
  - a standard process metric (PROCESS) or Prometheus' own `up`.

Each unknown name is printed with where it is used, and the exit status is 1.
A dashboard is also checked for the layout mistakes Grafana hides: duplicate
panel ids, refIds repeated within a panel, overlapping or too wide panels.

--emit-rules FILE writes every dashboard expression, with Grafana's variables
replaced by plain values, as a recording-rule file, so that `promtool check
rules FILE` parses them as Prometheus would.

Python standard library only; rule files are read line by line (the `expr:`
keys, plain, quoted or block scalars), which is all Prometheus rule files use.
"""

import argparse
import json
import re
import sys
from pathlib import Path

# Names a dashboard may show before the gateway exports them (a panel prepared
# for work in progress), e.g. "chgate_cache_requests_total" before the result
# cache landed. Drop a name from here once it is in src/ (the check says so).
PLANNED = set()

# What the process collector exports (the Prometheus client conventions).
PROCESS = {
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_heap_bytes",
    "process_start_time_seconds",
    "process_threads",
}

# Series Prometheus itself writes for every scrape target.
SCRAPE = {"up"}

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# PromQL words that look like identifiers but are not metric names.
KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "atan2", "inf", "nan", "start", "end",
}

GRAFANA_INTERVALS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__interval_ms": "60000",
}

IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


# ---------------------------------------------------------------------------
# PromQL


def grafana_to_promql(expr):
    """Replaces Grafana's variables: intervals by durations, the rest by `.*`
    (they are only used inside regex label matchers)."""

    def interval(match):
        name = match.group(1) or match.group(2)
        return GRAFANA_INTERVALS.get(name, match.group(0))

    expr = re.sub(r"\$\{(__\w+)\}|\$(__\w+)", interval, expr)
    expr = re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+(?::\w+)?\]\]", ".*", expr)
    return expr


def metric_names(expr):
    """The metric names an expression selects."""
    names = set()
    # __name__ matchers name a metric inside braces.
    for match in re.finditer(r'__name__\s*=~?\s*"([^"]*)"', expr):
        names.add(match.group(1))
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]", " ", text)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text
    )
    text = re.sub(r"\b0x[0-9a-fA-F]+\b", " ", text)
    text = re.sub(r"\b\d+(?:ms|s|m|h|d|w|y)\b", " ", text)  # offset durations
    text = re.sub(r"\b\d+(?:\.\d*)?(?:[eE][+-]?\d+)?\b|\.\d+\b", " ", text)
    for match in IDENT.finditer(text):
        word = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("("):  # a function or an aggregation
            continue
        if word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def variable_query_names(query):
    """Metric names in a Grafana Prometheus variable query."""
    query = query.strip()
    match = re.fullmatch(r"label_values\((.*),\s*[A-Za-z_]\w*\s*\)", query, re.S)
    if match:
        return metric_names(match.group(1)), match.group(1)
    match = re.fullmatch(r"label_values\(\s*[A-Za-z_]\w*\s*\)", query)
    if match:
        return set(), None
    match = re.fullmatch(r"query_result\((.*)\)", query, re.S)
    if match:
        return metric_names(match.group(1)), match.group(1)
    if query.startswith("label_names(") or query.startswith("metrics("):
        return set(), None
    return metric_names(query), query


# ---------------------------------------------------------------------------
# Files


class Problems:
    def __init__(self):
        self.items = []

    def add(self, path, message):
        self.items.append(f"{path}: {message}")


def dashboard_expressions(path, problems):
    """(where, PromQL expression) pairs of a Grafana dashboard, plus layout checks."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        problems.add(path, f"not valid JSON: {err}")
        return []
    if isinstance(doc.get("dashboard"), dict):  # an API export wraps it
        doc = doc["dashboard"]
    found = []
    seen_ids = {}
    boxes = []

    def walk(panels):
        for panel in panels or []:
            title = panel.get("title") or f"panel {panel.get('id')}"
            pid = panel.get("id")
            if pid is None:
                problems.add(path, f"panel {title!r} has no id")
            elif pid in seen_ids:
                problems.add(path, f"panel id {pid} used by {seen_ids[pid]!r} and {title!r}")
            else:
                seen_ids[pid] = title
            grid = panel.get("gridPos") or {}
            if not all(k in grid for k in ("x", "y", "w", "h")):
                problems.add(path, f"panel {title!r} has no complete gridPos")
            else:
                if grid["x"] < 0 or grid["w"] <= 0 or grid["x"] + grid["w"] > 24:
                    problems.add(path, f"panel {title!r} does not fit the 24-column grid: {grid}")
                boxes.append((title, grid))
            refs = set()
            for target in panel.get("targets") or []:
                ref = target.get("refId")
                if ref in refs:
                    problems.add(path, f"panel {title!r} repeats refId {ref}")
                refs.add(ref)
                expr = target.get("expr")
                if expr is not None:
                    if not expr.strip():
                        problems.add(path, f"panel {title!r} target {ref} has an empty expr")
                    else:
                        found.append((f"panel {title!r} ({ref})", expr))
            walk(panel.get("panels"))  # rows keep their panels when collapsed

    walk(doc.get("panels"))
    for i, (title_a, a) in enumerate(boxes):
        for title_b, b in boxes[i + 1:]:
            if (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                    and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]):
                problems.add(path, f"panels {title_a!r} and {title_b!r} overlap")
    for var in (doc.get("templating") or {}).get("list") or []:
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if query:
            found.append((f"variable ${var.get('name')}", ("variable", query)))
    for ann in (doc.get("annotations") or {}).get("list") or []:
        if ann.get("expr"):
            found.append((f"annotation {ann.get('name')!r}", ann["expr"]))
    return found


def prometheus_free(path):
    """True for a dashboard none of whose targets uses Prometheus (the ClickHouse SQL
    panels of the business dashboard): it has no PromQL to check, only its layout."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    if isinstance(doc.get("dashboard"), dict):
        doc = doc["dashboard"]
    types = set()

    def walk(panels):
        for panel in panels or []:
            for target in panel.get("targets") or []:
                source = target.get("datasource") or panel.get("datasource") or {}
                types.add(source.get("type") if isinstance(source, dict) else None)
            walk(panel.get("panels"))

    walk(doc.get("panels"))
    return bool(types) and "prometheus" not in types


def rule_expressions(path, problems):
    """(where, expression) pairs of a Prometheus rule file, read line by line."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        problems.add(path, f"cannot read: {err}")
        return []
    found = []
    name = None
    i = 0
    key = re.compile(r"^(\s*(?:-\s+)?)(alert|record|expr):\s*(.*?)\s*$")
    while i < len(lines):
        match = key.match(lines[i])
        i += 1
        if not match:
            continue
        indent = len(match.group(1))
        field, value = match.group(2), match.group(3)
        if value.startswith("#"):
            value = ""
        if field in ("alert", "record"):
            name = value.strip("'\"")
            continue
        block = re.fullmatch(r"[|>][+-]?\d*", value)
        body = []
        while i < len(lines):
            line = lines[i]
            if line.strip() and (len(line) - len(line.lstrip())) <= indent:
                break
            body.append(line.strip())
            i += 1
        if block:
            text = "\n".join(body)
        else:
            text = " ".join([value] + [b for b in body if b])
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                text = text[1:-1]
                if value.startswith('"'):
                    text = text.replace('\\"', '"').replace("\\\\", "\\")
                else:
                    text = text.replace("''", "'")
        if not text.strip():
            problems.add(path, f"rule {name!r} has an empty expr (line {i})")
            continue
        found.append((f"rule {name!r}", text))
    return found


# ---------------------------------------------------------------------------
# Source


def source_metrics(src):
    """(every chgate_* name in the source, the histograms among them, the
    names recorded with a metrics macro)."""
    known, histograms, recorded = set(), set(), set()
    for path in sorted(Path(src).rglob("*.rs")):
        text = path.read_text(errors="replace")
        known.update(re.findall(r"chgate_[a-z0-9_]+", text))
        for kind, name in re.findall(
            r'\b(counter|gauge|histogram)!\(\s*"(chgate_[a-z0-9_]+)"', text
        ):
            recorded.add(name)
            if kind == "histogram":
                histograms.add(name)
    return known, histograms, recorded


def classify(name, known, histograms):
    """None when the name is fine, else why not."""
    if name in SCRAPE or name in PROCESS:
        return None
    if name in histograms:
        return "is a histogram: use its _bucket, _sum or _count series"
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in histograms:
            return None
    if name in known:
        return None
    if name in PLANNED:
        return None
    return "unknown metric (not in the gateway's source)"


# ---------------------------------------------------------------------------


def self_test():
    cases = {
        'sum by (le, route) (rate(chgate_http_request_duration_seconds_bucket'
        '{instance=~"$instance", route!="/metrics"}[$__rate_interval]))':
            {"chgate_http_request_duration_seconds_bucket"},
        "histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m]))) > 0.25": {"x_bucket"},
        "a / on(instance) group_left(version) b": {"a", "b"},
        'up{job="chgate"} == 0': {"up"},
        "time() - process_start_time_seconds": {"process_start_time_seconds"},
        "deriv(w_bytes[10m]) > 0 and w_bytes > 256 * 1024 * 1024": {"w_bytes"},
        "sum(rate(foo_total[5m] offset 1h)) > 1e3": {"foo_total"},
        'label_replace(foo, "dst", "$1", "src", "(.*)")': {"foo"},
        'sum without (instance) (x) unless y': {"x", "y"},
        'count_values("version", build_info)': {"build_info"},
        "rate(x[5m:1m]) > bool 0.5": {"x"},
        "sum(x) by (route) / ignoring(route) sum(z)": {"x", "z"},
        '{__name__="named_metric", job="j"}': {"named_metric"},
        "max_over_time(x[1h] @ end())": {"x"},
        "vector(1) > .5": set(),
        "a:recorded:rate5m > 0x10": {"a:recorded:rate5m"},
    }
    failed = 0
    for expr, want in cases.items():
        got = metric_names(expr)
        if got != want:
            print(f"self-test: {expr!r}: got {sorted(got)}, want {sorted(want)}")
            failed += 1
    var_cases = {
        "label_values(chgate_http_requests_total, job)": {"chgate_http_requests_total"},
        'label_values(m{job=~"$job"}, instance)': {"m"},
        "label_values(instance)": set(),
    }
    for query, want in var_cases.items():
        got, _ = variable_query_names(query)
        if got != want:
            print(f"self-test: variable {query!r}: got {sorted(got)}, want {sorted(want)}")
            failed += 1
    substituted = grafana_to_promql('rate(m{a=~"$a", b=~"${b}"}[$__rate_interval])')
    if substituted != 'rate(m{a=~".*", b=~".*"}[5m])':
        print(f"self-test: grafana_to_promql gave {substituted!r}")
        failed += 1
    import tempfile

    rules = (
        "groups:\n  - name: g\n    rules:\n"
        "      - alert: A\n        expr: plain_metric > 0\n        for: 5m\n"
        "      - alert: B\n        expr: |\n          sum(rate(block_a[5m]))\n"
        "            / sum(rate(block_b[5m])) > 0.05\n        for: 1m\n"
        "      - alert: C\n        expr: 'quoted{x=\"y\"} == 0'\n"
        "      - record: d:rate5m\n        expr: rate(plain_folded[5m])\n"
        "          > 0\n        labels:\n          a: b\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        f.write(rules)
        f.flush()
        problems = Problems()
        exprs = rule_expressions(f.name, problems)
    got = set()
    for _, expr in exprs:
        got |= metric_names(expr)
    want = {"plain_metric", "block_a", "block_b", "quoted", "plain_folded"}
    if got != want or len(exprs) != 4 or problems.items:
        print(f"self-test: rule file: got {sorted(got)} from {len(exprs)} exprs, want {sorted(want)}")
        failed += 1
    known, histograms = {"chgate_a_total", "chgate_h_seconds"}, {"chgate_h_seconds"}
    verdicts = {
        "chgate_a_total": True,
        "chgate_h_seconds_bucket": True,
        "up": True,
        "process_resident_memory_bytes": True,
        "chgate_h_seconds": False,
        "chgate_a_total_count": False,
        "chgate_typo_total": False,
    }
    for name, ok in verdicts.items():
        if (classify(name, known, histograms) is None) != ok:
            print(f"self-test: classify({name!r}) should be {'accepted' if ok else 'refused'}")
            failed += 1
    total = len(cases) + len(var_cases) + 2 + len(verdicts)
    print(f"check-dashboards self-test: {total - failed} of {total} cases right")
    return 1 if failed else 0


def main():
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="Grafana dashboards (*.json) and rule files (*.yml)")
    parser.add_argument("--src", default=str(root / "src"), help="the gateway's source (default: %(default)s)")
    parser.add_argument("--emit-rules", metavar="FILE", help="write the dashboards' expressions as a rule file")
    parser.add_argument("--self-test", action="store_true", help="test the expression scanner itself")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if not args.files:
        parser.error("no files to check")

    known, histograms, recorded = source_metrics(args.src)
    if not known:
        print(f"check-dashboards: no chgate_* metric found under {args.src}", file=sys.stderr)
        return 1
    problems = Problems()
    used = {}  # name -> [where]
    emitted = []
    for path in args.files:
        if path.endswith(".json"):
            exprs = dashboard_expressions(path, problems)
        elif path.endswith((".yml", ".yaml")):
            exprs = rule_expressions(path, problems)
        else:
            problems.add(path, "neither a dashboard (.json) nor a rule file (.yml)")
            continue
        if not exprs and not (path.endswith(".json") and prometheus_free(path)):
            problems.add(path, "has no PromQL expression to check")
        for where, expr in exprs:
            if isinstance(expr, tuple):  # a variable query
                names, promql = variable_query_names(expr[1])
            else:
                names, promql = metric_names(expr), expr
            if not names and "vector(" not in (promql or "") and promql:
                problems.add(path, f"{where}: no metric name found in {promql!r}")
            for name in names:
                used.setdefault(name, []).append(f"{path}: {where}")
            if promql and path.endswith(".json"):
                emitted.append((f"{Path(path).stem}: {where}", grafana_to_promql(promql)))

    unknown = 0
    for name in sorted(used):
        why = classify(name, known, histograms)
        if why:
            unknown += 1
            print(f"{name}: {why}; used in:")
            for where in sorted(set(used[name])):
                print(f"    {where}")
    for item in problems.items:
        print(item)

    if args.emit_rules:
        with open(args.emit_rules, "w") as out:
            out.write("# Generated by scripts/lib/check-dashboards.py --emit-rules\n")
            out.write("groups:\n  - name: dashboard-expressions\n    rules:\n")
            for n, (where, promql) in enumerate(emitted):
                out.write(f"      # {where}\n")
                out.write(f"      - record: dashboard_expression_{n}\n")
                out.write("        expr: " + json.dumps(promql) + "\n")

    planned = sorted(n for n in used if n in PLANNED and n not in known)
    chgate_used = {n for n in used if n.startswith("chgate_")}
    shown = {
        n for n in recorded
        if n in chgate_used or any(n + s in chgate_used for s in HISTOGRAM_SUFFIXES)
    }
    print(
        f"check-dashboards: {len(used)} metric names in {len(args.files)} files, "
        f"{unknown} unknown, {len(problems.items)} other problems"
        + (f"; planned, not yet exported: {', '.join(planned)}" if planned else "")
    )
    landed = sorted(PLANNED & recorded)
    if landed:
        print(f"check-dashboards: note: in src/ now, drop from PLANNED: {', '.join(landed)}")
    missing = sorted(recorded - shown)
    if missing:
        print(f"check-dashboards: note: not shown anywhere: {', '.join(missing)}")
    return 1 if unknown or problems.items else 0


if __name__ == "__main__":
    sys.exit(main())
