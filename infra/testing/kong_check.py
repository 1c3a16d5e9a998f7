"""Checks `kong/kong.yml` offline (Kong cannot run here): against Kong's declarative schema, the
fields of the plugins it uses, and the API's routes.

    kong_check.py KONG_YML SCHEMA_JSON API_JSON

API_JSON (written by `api/tests/api/kong.rs`): {"routes": [{"method", "path"}], "streams": [path],
"pages": [path], "maxBodyBytes": n}: the API's route catalogue, its long-lived streams, the
portal's pages and the API's body limit. Exits 1 naming every problem.
"""

import json
import re
import sys

import jsonschema
import yaml

# The fields of each plugin's `config` (Kong 3.10, `kong/plugins/*/schema.lua`): the schema leaves
# `config` free-form, so a misspelt field would pass it and be refused by Kong at start.
PLUGIN_FIELDS = {
    "rate-limiting": {
        "second", "minute", "hour", "day", "month", "year", "limit_by", "header_name", "path",
        "policy", "redis", "fault_tolerant", "hide_client_headers", "error_code", "error_message",
        "sync_rate",
    },
    "correlation-id": {"header_name", "generator", "echo_downstream"},
    "request-size-limiting": {"allowed_payload_size", "size_unit", "require_content_length"},
    "cors": {
        "origins", "headers", "exposed_headers", "methods", "max_age", "credentials",
        "private_network", "preflight_continue", "allow_origin_absent",
    },
    "prometheus": {
        "per_consumer", "status_code_metrics", "latency_metrics", "bandwidth_metrics",
        "upstream_health_metrics",
    },
}
REDIS_FIELDS = {"host", "port", "timeout", "username", "password", "database", "ssl", "ssl_verify", "server_name"}
PERIODS = ["second", "minute", "hour", "day", "month", "year"]
CORS_METHODS = {"GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
SIZE_UNITS = {"bytes": 1, "kilobytes": 1024, "megabytes": 1024 * 1024}
# A stream quiet for less than this is not cut by Kong.
STREAM_READ_TIMEOUT_MS = 600_000


def sample(path):
    """A concrete path for a template: `{id}` (the API's) or `<id>` (the portal's) filled in."""
    return re.sub(r"\{[^}]+\}|<[^>]+>", "0b7e2c4a", path)


def check_plugins(plugins, api, problems):
    by_name = {}
    for plugin in plugins:
        name, config = plugin["name"], plugin.get("config") or {}
        by_name[name] = config
        allowed = PLUGIN_FIELDS.get(name)
        if allowed is None:
            problems.append(f"plugin {name}: not one this file is checked for; add its fields to kong_check.py")
            continue
        for field in sorted(set(config) - allowed):
            problems.append(f"plugin {name}: unknown field {field!r}")
    for required in PLUGIN_FIELDS:
        if required not in by_name:
            problems.append(f"plugin {required}: missing")

    limits = by_name.get("rate-limiting", {})
    set_periods = [p for p in PERIODS if p in limits]
    for shorter, longer in zip(set_periods, set_periods[1:]):
        if limits[longer] < limits[shorter]:
            problems.append(f"plugin rate-limiting: the {longer}'s limit is lower than the {shorter}'s")
    if any(not isinstance(limits[p], (int, float)) or limits[p] <= 0 for p in set_periods) or not set_periods:
        problems.append("plugin rate-limiting: needs limits above 0 for at least one period")
    if limits.get("policy") != "redis":
        problems.append("plugin rate-limiting: policy must be redis (shared by every Kong node; DB-less has no cluster)")
    redis = limits.get("redis") or {}
    for field in sorted(set(redis) - REDIS_FIELDS):
        problems.append(f"plugin rate-limiting: unknown redis field {field!r}")
    if not redis.get("host"):
        problems.append("plugin rate-limiting: redis.host is missing")
    if limits.get("limit_by", "consumer") not in {"consumer", "credential", "ip", "service", "header", "path"}:
        problems.append(f"plugin rate-limiting: limit_by {limits.get('limit_by')!r}")
    sync = limits.get("sync_rate", -1)
    if sync != -1 and sync < 0.02:
        problems.append("plugin rate-limiting: sync_rate is -1 or at least 0.02")

    correlation = by_name.get("correlation-id", {})
    if correlation.get("header_name") != "X-Request-ID":
        problems.append("plugin correlation-id: header_name must be X-Request-ID, the API's request id")
    if correlation.get("generator", "uuid#counter") not in {"uuid", "uuid#counter", "tracker"}:
        problems.append(f"plugin correlation-id: generator {correlation.get('generator')!r}")

    size = by_name.get("request-size-limiting", {})
    unit = size.get("size_unit", "megabytes")
    if unit not in SIZE_UNITS:
        problems.append(f"plugin request-size-limiting: size_unit {unit!r}")
    elif size.get("allowed_payload_size", 128) * SIZE_UNITS[unit] != api["maxBodyBytes"]:
        problems.append(f"plugin request-size-limiting: not the API's own limit of {api['maxBodyBytes']} bytes")

    cors = by_name.get("cors", {})
    for method in sorted(set(cors.get("methods", [])) - CORS_METHODS):
        problems.append(f"plugin cors: method {method!r}")

    prometheus = by_name.get("prometheus", {})
    for field, value in prometheus.items():
        if not isinstance(value, bool):
            problems.append(f"plugin prometheus: {field} is a boolean")


class Router:
    """Kong's choice among regex routes: those whose method and anchored path match, the highest
    `regex_priority` first; two at the top are ambiguous."""

    def __init__(self, services, problems):
        self.routes = []
        self.problems = problems
        for service in services:
            for route in service.get("routes", []):
                for path in route.get("paths", []):
                    if not path.startswith("~"):
                        problems.append(f"route {route['name']}: path {path!r} is a prefix; this file uses anchored regexes")
                    elif not path.endswith("$"):
                        problems.append(f"route {route['name']}: path {path!r} is not anchored with $")
                self.routes.append((service, route))

    def route(self, method, path):
        matching = [
            (s, r) for s, r in self.routes
            if method in r.get("methods", []) and any(re.match(p[1:], path) for p in r.get("paths", []) if p.startswith("~"))
        ]
        if not matching:
            return None
        matching.sort(key=lambda sr: -sr[1].get("regex_priority", 0))
        if len(matching) > 1 and matching[0][1].get("regex_priority", 0) == matching[1][1].get("regex_priority", 0):
            names = ", ".join(r["name"] for _, r in matching)
            self.problems.append(f"{method} {path}: matched by {names} at the same regex_priority")
        return matching[0]


def snippet(method, path):
    regex = "~" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"
    methods = f"[{method}, HEAD]" if method == "GET" else f"[{method}]"
    name = re.sub(r"[{}]", "", path).strip("/").replace("/", "-")
    return f"      - name: {name}\n        paths: [\"{regex}\"]\n        methods: {methods}"


def check_routes(doc, api, problems):
    router = Router(doc.get("services", []), problems)
    served = set()
    for r in api["routes"]:
        method, path = r["method"], r["path"]
        found = router.route(method, sample(path))
        if found is None or "portal" in (found[1].get("tags") or []):
            problems.append(f"{method} {path}: no Kong route; add to a service's routes:\n{snippet(method, path)}")
            continue
        service, route = found
        served.add((route["name"], method))
        if method == "GET":
            served.add((route["name"], "HEAD"))
        if path in api["streams"]:
            if route.get("response_buffering", True):
                problems.append(f"{method} {path}: a stream, but its route {route['name']} buffers answers")
            if service.get("read_timeout", 60000) < STREAM_READ_TIMEOUT_MS:
                problems.append(f"{method} {path}: a stream, but service {service['name']} cuts it after {service.get('read_timeout', 60000)} ms")
        elif route.get("response_buffering", True) is False:
            problems.append(f"{method} {path}: not a stream, but its route {route['name']} is unbuffered")

    # Assets: hashed files, and the vendored libraries under versioned folders (consoles, Redoc).
    for page in api["pages"] + ["/assets/portal-0b7e2c4a.js", "/assets/redoc-2.5.2/redoc.standalone.js"]:
        found = router.route("GET", sample(page))
        if found is None or "portal" not in (found[1].get("tags") or []):
            problems.append(f"GET {page}: a portal page without the portal's Kong route")
        else:
            served.add((found[1]["name"], "GET"))
            served.add((found[1]["name"], "HEAD"))

    for service, route in router.routes:
        if "portal" in (route.get("tags") or []) and set(route.get("methods", [])) - {"GET", "HEAD"}:
            problems.append(f"route {route['name']}: the portal is only read (GET, HEAD)")
        for method in route.get("methods", []):
            if (route["name"], method) not in served:
                problems.append(f"route {route['name']}: {method} reaches no API route")


def main():
    kong_yml, schema_json, api_json = sys.argv[1:4]
    with open(kong_yml) as f:
        doc = yaml.safe_load(f)
    with open(schema_json) as f:
        schema = json.load(f)
    with open(api_json) as f:
        api = json.load(f)
    problems = []
    for error in jsonschema.Draft4Validator(schema).iter_errors(doc):
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append(f"schema: {where}: {error.message}")
    check_plugins(doc.get("plugins", []), api, problems)
    check_routes(doc, api, problems)
    for problem in problems:
        print(problem)
    if problems:
        sys.exit(1)
    print(f"kong.yml: valid; {len(api['routes'])} API routes and {len(api['pages'])} portal pages routed")


if __name__ == "__main__":
    main()
