"""Checks the deployment files offline (no Docker, kubectl or kustomize here).

    check_deploy.py REPO QUEUES_JSON

QUEUES_JSON (written by the test): {"queues": [every queue name]}.

* yamllint (infra/.yamllint.yaml) on kong/, infra/compose/ and infra/k8s/.
* Kubernetes: each kustomization under infra/k8s (base and overlays) rendered as kustomize would
  for what these files use (resources, namespace, images, JSON 6902 patches), and every object
  validated: built-in kinds by PyPI kubernetes-validate (strict: unknown fields refused), KEDA's
  and CloudNativePG's kinds against their published schemas (infra/k8s/crd-schemas, strict too).
  Then what holds them together: each queue consumed by exactly one worker pool, each pool scaled
  by a ScaledObject on its own queues' streams, HPA, budgets, policies and Services selecting
  something, the API's probes, every container non-root with limits, secrets documented.
* Compose: services named in depends_on exist, the files it mounts and builds from exist, the
  Dockerfile's targets exist.

Exits 1 naming every problem.
"""

import copy
import json
import os
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.33.0"
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_ScaledObject.json",
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_v1_Cluster.json",
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): "postgresql.cnpg.io_v1_ScheduledBackup.json",
}


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def pointer(path):
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def apply_op(doc, op, problems, where):
    parts = pointer(op["path"])
    parent = doc
    for p in parts[:-1]:
        try:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        except (KeyError, IndexError, ValueError):
            problems.append(f"{where}: {op['path']} does not exist")
            return
    last = parts[-1]
    kind = op["op"]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, op["value"])
        elif kind == "replace" and index < len(parent):
            parent[index] = op["value"]
        elif kind == "remove" and index < len(parent):
            del parent[index]
        else:
            problems.append(f"{where}: {kind} {op['path']} is out of range")
    elif kind == "add":
        parent[last] = op["value"]
    elif last not in parent:
        problems.append(f"{where}: {kind} {op['path']}: no such field to {kind}")
    elif kind == "replace":
        parent[last] = op["value"]
    elif kind == "remove":
        del parent[last]
    else:
        problems.append(f"{where}: op {kind} is not handled by this check")


def render(directory, problems):
    """The objects `kustomize build directory` makes, for the features these files use."""
    kfile = os.path.join(directory, "kustomization.yaml")
    k = load_all(kfile)[0]
    allowed = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}
    for field in sorted(set(k) - allowed):
        problems.append(f"{kfile}: {field} is not a feature this check renders")
    objects = []
    for resource in k.get("resources", []):
        path = os.path.normpath(os.path.join(directory, resource))
        if os.path.isdir(path):
            objects += render(path, problems)
        elif os.path.isfile(path):
            objects += load_all(path)
        else:
            problems.append(f"{kfile}: resource {resource} does not exist")
    for patch in k.get("patches", []):
        target = patch.get("target", {})
        matches = [o for o in objects if o.get("kind") == target.get("kind") and o["metadata"]["name"] == target.get("name")]
        if len(matches) != 1:
            problems.append(f"{kfile}: patch target {target} matches {len(matches)} objects")
            continue
        for op in yaml.safe_load(patch["patch"]):
            apply_op(matches[0], op, problems, f"{kfile} patch of {target.get('kind')}/{target.get('name')}")
    for image in k.get("images", []):
        for o in objects:
            for c in containers(o):
                name, _, _ = c["image"].partition(":")
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image['newTag']}" if "newTag" in image else image["newName"]
    if "namespace" in k:
        for o in objects:
            if o["kind"] != "Namespace":
                o["metadata"]["namespace"] = k["namespace"]
    for label in k.get("labels", []):
        for o in objects:
            o["metadata"].setdefault("labels", {}).update(label["pairs"])
    return objects


def pod_spec(o):
    if o.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return o["spec"]["template"]["spec"]
    return None


def pod_labels(o):
    if o.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return o["spec"]["template"]["metadata"].get("labels", {})
    return None


def containers(o):
    spec = pod_spec(o)
    return spec["containers"] if spec else []


def strict(schema):
    """The schema refusing unknown fields wherever it lists the known ones (as the API server's
    strict field validation does)."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def validate_objects(objects, crd_dir, where, problems):
    for o in objects:
        name = f"{where}: {o.get('kind')}/{o.get('metadata', {}).get('name')}"
        crd = CRD_KINDS.get((o.get("apiVersion"), o.get("kind")))
        if crd:
            with open(os.path.join(crd_dir, crd)) as f:
                schema = strict(json.load(f))
            for e in jsonschema.Draft7Validator(schema).iter_errors(o):
                problems.append(f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message[:200]}")
            continue
        try:
            kubernetes_validate.validate(copy.deepcopy(o), K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{name}: {'/'.join(map(str, e.path))}: {e.message[:200]}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{name}: no schema for {o.get('apiVersion')} {o.get('kind')}")


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check_cluster(objects, where, queues, documented_secrets, problems):
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    workloads = [o for o in objects if pod_spec(o) is not None]
    deployments = {o["metadata"]["name"]: o for o in by_kind.get("Deployment", [])}

    def env(c, name):
        for e in c.get("env", []):
            if e["name"] == name:
                return e.get("value")
        return None

    # Every queue consumed by exactly one pool; the pools scaled on their own streams.
    consumed = {}
    scaled = {so["spec"]["scaleTargetRef"]["name"]: so for so in by_kind.get("ScaledObject", [])}
    for name, d in deployments.items():
        c = containers(d)[0]
        if not c["image"].split(":")[0].endswith("nimbus-worker"):
            continue
        pool = (env(c, "WORKER_QUEUES") or "").split(",")
        events = env(c, "EVENTS") != "0"
        for q in pool:
            consumed.setdefault(q, []).append(name)
        if not any(e["name"] == "WORKER_NAME" and e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name" for e in c.get("env", [])):
            problems.append(f"{where}: {name}: WORKER_NAME must be the pod's name (unique per process)")
        so = scaled.get(name)
        if so is None:
            problems.append(f"{where}: worker pool {name} has no ScaledObject")
            continue
        expected = {(f"nimbus:q:{q}", "workers") for q in pool}
        if events:
            expected.add(("nimbus:events", "webhooks"))
        lag, pending = set(), set()
        for t in so["spec"]["triggers"]:
            m = t.get("metadata", {})
            if t.get("type") != "redis-streams":
                problems.append(f"{where}: {so['metadata']['name']}: trigger {t.get('type')} is not redis-streams")
                continue
            key = (m.get("stream"), m.get("consumerGroup"))
            if key not in expected:
                problems.append(f"{where}: {so['metadata']['name']}: stream {key} is not one of its pool's")
            (lag if "lagCount" in m else pending).add(key)
        for key in sorted(expected - lag):
            problems.append(f"{where}: {so['metadata']['name']}: no lagCount trigger on {key}")
        for key in sorted(expected - pending):
            problems.append(f"{where}: {so['metadata']['name']}: no pending-entries trigger on {key} (a running job would be scaled away)")
    for q in queues:
        if len(consumed.get(q, [])) != 1:
            problems.append(f"{where}: queue {q} is consumed by {consumed.get(q, [])}, not exactly one pool")
    for q in sorted(set(consumed) - set(queues)):
        problems.append(f"{where}: {consumed[q]} consume {q!r}, which is no queue")
    for target in sorted(set(scaled) - set(deployments)):
        problems.append(f"{where}: ScaledObject targets {target}, which does not exist")

    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        if hpa["spec"]["scaleTargetRef"]["name"] not in deployments:
            problems.append(f"{where}: HPA {hpa['metadata']['name']} targets nothing")
    for kind, path in [("PodDisruptionBudget", ("spec", "selector", "matchLabels")),
                       ("NetworkPolicy", ("spec", "podSelector", "matchLabels")),
                       ("Service", ("spec", "selector"))]:
        for o in by_kind.get(kind, []):
            selector = o
            for p in path:
                selector = selector.get(p, {})
            if not any(selects(selector, pod_labels(w)) for w in workloads):
                problems.append(f"{where}: {kind} {o['metadata']['name']} selects no pod")

    # Every Nimbus process serves its metrics on METRICS_LISTEN, a declared port (and the
    # workers' liveness is that listener's /healthz).
    for name, d in deployments.items():
        c = containers(d)[0]
        image = c["image"].split(":")[0]
        if not image.endswith(("nimbus-api", "nimbus-worker")):
            continue
        listen = env(c, "METRICS_LISTEN")
        ports = {p["containerPort"]: p.get("name") for p in c.get("ports", [])}
        if not listen or int(listen.rsplit(":", 1)[1]) not in ports:
            problems.append(f"{where}: {name}: METRICS_LISTEN is unset or not a declared port")
            continue
        port_name = ports[int(listen.rsplit(":", 1)[1])]
        annotations = d["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/port") != listen.rsplit(":", 1)[1]:
            problems.append(f"{where}: {name}: the prometheus.io/port annotation is not the metrics port")
        if image.endswith("nimbus-worker"):
            probe = c.get("livenessProbe", {}).get("httpGet", {})
            if probe.get("path") != "/healthz" or probe.get("port") not in (port_name, int(listen.rsplit(":", 1)[1])):
                problems.append(f"{where}: {name}: no liveness probe on the metrics listener's /healthz")

    api = deployments.get("nimbus-api")
    if api is None:
        problems.append(f"{where}: no Deployment nimbus-api")
    else:
        c = containers(api)[0]
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append(f"{where}: nimbus-api's readiness probe is not /readyz")
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append(f"{where}: nimbus-api's liveness probe is not /healthz")

    for w in workloads:
        name = f"{where}: {w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{name}: not runAsNonRoot")
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation", True):
                problems.append(f"{name}: container {c['name']} may write its root or escalate")
            if "memory" not in c.get("resources", {}).get("limits", {}):
                problems.append(f"{name}: container {c['name']} has no memory limit")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] not in documented_secrets:
                    problems.append(f"{name}: secret {ref['name']} is not in infra/k8s/base/secrets.md")
            for e in c.get("env", []):
                if re.search(r"(?i)password|secret|token", e["name"]) and "value" in e and not e["name"].startswith("DATABASE_URL"):
                    problems.append(f"{name}: {e['name']} is written in the manifest, not taken from a secret")


def check_compose(repo, problems):
    directory = os.path.join(repo, "infra/compose")
    doc = load_all(os.path.join(directory, "compose.yaml"))[0]
    services = doc.get("services", {})
    with open(os.path.join(repo, "infra/docker/Dockerfile")) as f:
        targets = set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", f.read()))
    for name, s in services.items():
        for dep in s.get("depends_on", []) if isinstance(s.get("depends_on"), list) else s.get("depends_on", {}):
            if dep not in services:
                problems.append(f"compose: {name} depends on {dep}, which is no service")
        build = s.get("build")
        if build:
            context = os.path.normpath(os.path.join(directory, build["context"]))
            if not os.path.isfile(os.path.join(context, build["dockerfile"])):
                problems.append(f"compose: {name}'s Dockerfile {build['dockerfile']} does not exist")
            if build.get("target") not in targets:
                problems.append(f"compose: {name} builds target {build.get('target')}, not in the Dockerfile")
        for volume in s.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                if not os.path.exists(os.path.normpath(os.path.join(directory, source))):
                    problems.append(f"compose: {name} mounts {source}, which does not exist")
            elif source not in (doc.get("volumes") or {}):
                problems.append(f"compose: {name} mounts the volume {source}, which is not declared")


def main():
    repo, queues_json = sys.argv[1:3]
    with open(queues_json) as f:
        queues = json.load(f)["queues"]
    problems = []
    lint = subprocess.run(
        [sys.executable, "-m", "yamllint", "-c", os.path.join(repo, "infra/.yamllint.yaml"),
         os.path.join(repo, "kong"), os.path.join(repo, "infra/compose"), os.path.join(repo, "infra/k8s")],
        capture_output=True, text=True,
    )
    if lint.returncode != 0:
        problems.append("yamllint:\n" + lint.stdout + lint.stderr)

    k8s = os.path.join(repo, "infra/k8s")
    with open(os.path.join(k8s, "base/secrets.md")) as f:
        documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", f.read(), re.M))
    rendered = 0
    for overlay in ["base", "overlays/dev", "overlays/prod"]:
        objects = render(os.path.join(k8s, overlay), problems)
        rendered += len(objects)
        validate_objects(objects, os.path.join(k8s, "crd-schemas"), overlay, problems)
        check_cluster(objects, overlay, queues, documented, problems)
    check_compose(repo, problems)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"deployment files: valid ({rendered} Kubernetes objects in base, dev and prod)")


if __name__ == "__main__":
    main()
