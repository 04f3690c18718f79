#!/usr/bin/env python3
"""Validates the Kubernetes manifests of deploy/k8s without a cluster.

For each kustomization (deploy/k8s/base and every deploy/k8s/overlays/*), it renders the
documents with `kubectl kustomize` (or, without kubectl, reads the `resources:` files of the
kustomization and the bases it names, skipping patches), then checks:
  1. schema: each document against the Kubernetes 1.27 OpenAPI JSON schemas of the npm
     package kubernetes-models (node + ajv), when node and that package are present
     (--install-schemas installs it with npm into .cache/kubernetes-models);
  2. structure: apiVersion/kind of the kinds used here, metadata.name, required spec fields;
  3. references, within one rendered kustomization: every volumeMount names a volume (or a
     volumeClaimTemplate); every ConfigMap, Secret and PVC a volume names exists; a
     StatefulSet's serviceName is a headless Service; each Service selects a workload and
     its targetPorts are that workload's container ports; selectors match pod labels;
     probes have exactly one handler;
  4. the FedPrLLM configs in ConfigMaps: every file an exec probe or the container args
     pass with --config is a key of a mounted ConfigMap, and every tls cert/key/ca/crl path in
     those configs is a key of a mounted Secret.
Prints one line per kustomization and per problem; exits 0 only if there were none.
Usage: scripts/validate_k8s.py [--install-schemas] [KUSTOMIZATION_DIR...]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "deploy", "k8s")
SCHEMA_DIR = os.path.join(ROOT, ".cache", "kubernetes-models")
SCHEMA_PACKAGE = "kubernetes-models@4.5.1"

# kind -> (apiVersion, module path in kubernetes-models).
KINDS = {
    "Namespace": ("v1", "v1"),
    "ConfigMap": ("v1", "v1"),
    "Secret": ("v1", "v1"),
    "Service": ("v1", "v1"),
    "PersistentVolumeClaim": ("v1", "v1"),
    "StatefulSet": ("apps/v1", "apps/v1"),
    "Deployment": ("apps/v1", "apps/v1"),
}
WORKLOADS = ("StatefulSet", "Deployment")
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")

# Reads JSON [{kind, apiVersion, ...}] on stdin; prints JSON [[index, error], ...].
NODE_VALIDATOR = r"""
const docs = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const modules = JSON.parse(process.argv[1]);
const errors = [];
docs.forEach((doc, i) => {
  const mod = require('kubernetes-models/' + modules[doc.kind]);
  try { new mod[doc.kind](doc).validate(); }
  catch (e) { errors.push([i, String(e.message || e)]); }
});
console.log(JSON.stringify(errors));
"""


def load_yaml_docs(text, where):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def render(directory, problems):
    """The documents of the kustomization in `directory`."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True)
        if out.returncode != 0:
            problems.append(f"kubectl kustomize failed: {out.stderr.strip()}")
            return []
        return load_yaml_docs(out.stdout, directory)
    # Without kubectl: the resources alone, recursively; patches and images are skipped.
    with open(os.path.join(directory, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    docs = []
    for resource in kustomization.get("resources", []):
        path = os.path.join(directory, resource)
        if os.path.isdir(path):
            docs += render(path, problems)
        elif not os.path.exists(path):
            problems.append(f"resource {resource} does not exist")
        else:
            with open(path) as f:
                docs += load_yaml_docs(f.read(), path)
    if kustomization.get("patches") or kustomization.get("images"):
        print(f"  note: no kubectl: {os.path.relpath(directory, ROOT)}'s patches and images not applied")
    return docs


def schema_validator(install):
    """The folder holding node_modules/kubernetes-models, or None."""
    node = shutil.which("node")
    if node is None:
        return None
    if not os.path.isdir(os.path.join(SCHEMA_DIR, "node_modules", "kubernetes-models")):
        if not install or shutil.which("npm") is None:
            return None
        os.makedirs(SCHEMA_DIR, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", SCHEMA_DIR, "--no-audit", "--no-fund", "--silent",
                        SCHEMA_PACKAGE], check=True)
    return SCHEMA_DIR


def check_schemas(docs, schema_dir, problems):
    known = [d for d in docs if d.get("kind") in KINDS]
    modules = {kind: module for kind, (_, module) in KINDS.items()}
    out = subprocess.run(["node", "-e", NODE_VALIDATOR, json.dumps(modules)], input=json.dumps(known),
                         capture_output=True, text=True, cwd=schema_dir)
    if out.returncode != 0:
        problems.append(f"schema validator failed: {out.stderr.strip()[-500:]}")
        return
    for index, error in json.loads(out.stdout):
        problems.append(f"{name_of(known[index])}: schema: {error}")


def name_of(doc):
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


def get(obj, *path):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def check_structure(doc, problems):
    kind = doc.get("kind")
    where = name_of(doc)
    if kind not in KINDS:
        problems.append(f"{where}: kind not known to this validator")
        return
    if doc.get("apiVersion") != KINDS[kind][0]:
        problems.append(f"{where}: apiVersion {doc.get('apiVersion')!r}, expected {KINDS[kind][0]!r}")
    if not get(doc, "metadata", "name"):
        problems.append(f"{where}: no metadata.name")
    if kind in WORKLOADS:
        for field in ("selector", "template"):
            if get(doc, "spec", field) is None:
                problems.append(f"{where}: no spec.{field}")
        containers = get(doc, "spec", "template", "spec", "containers") or []
        if not containers:
            problems.append(f"{where}: no containers")
        for c in containers:
            if not c.get("name") or not c.get("image"):
                problems.append(f"{where}: a container lacks name or image")
        if kind == "StatefulSet" and not get(doc, "spec", "serviceName"):
            problems.append(f"{where}: no spec.serviceName")
    if kind == "Service" and not get(doc, "spec", "ports"):
        problems.append(f"{where}: no spec.ports")
    if kind == "PersistentVolumeClaim":
        if not get(doc, "spec", "accessModes") or not get(doc, "spec", "resources", "requests", "storage"):
            problems.append(f"{where}: needs spec.accessModes and spec.resources.requests.storage")


def config_arg(command):
    """The value after --config in an argv list, or None."""
    for i, arg in enumerate(command or []):
        if arg == "--config" and i + 1 < len(command):
            return command[i + 1]
        if isinstance(arg, str) and arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def check_workload(doc, by_kind, problems):
    where = name_of(doc)
    pod = get(doc, "spec", "template", "spec") or {}
    labels = get(doc, "spec", "template", "metadata", "labels") or {}
    selector = get(doc, "spec", "selector", "matchLabels") or {}
    for key, value in selector.items():
        if labels.get(key) != value:
            problems.append(f"{where}: selector {key}={value} does not match the pod labels")
    volumes = {v.get("name"): v for v in pod.get("volumes", [])}
    claim_templates = {get(t, "metadata", "name") for t in get(doc, "spec", "volumeClaimTemplates") or []}
    for name, volume in volumes.items():
        for field, key, kind in (("configMap", "name", "ConfigMap"), ("secret", "secretName", "Secret"),
                                 ("persistentVolumeClaim", "claimName", "PersistentVolumeClaim")):
            if field in volume and volume[field].get(key) not in by_kind[kind]:
                problems.append(f"{where}: volume {name} names {kind} {volume[field].get(key)!r}, not in this kustomization")
    if doc["kind"] == "StatefulSet":
        service = by_kind["Service"].get(get(doc, "spec", "serviceName"))
        if service is None:
            problems.append(f"{where}: serviceName {get(doc, 'spec', 'serviceName')!r} is no Service here")
        elif get(service, "spec", "clusterIP") != "None":
            problems.append(f"{where}: serviceName {get(doc, 'spec', 'serviceName')!r} is not headless")
    for c in pod.get("containers", []):
        # mount path -> (volume, its source)
        mounts = {}
        for m in c.get("volumeMounts", []):
            if m.get("name") not in volumes and m.get("name") not in claim_templates:
                problems.append(f"{where}: container {c.get('name')} mounts {m.get('name')!r}, which is no volume")
                continue
            if not m.get("mountPath"):
                problems.append(f"{where}: container {c.get('name')}: volumeMount {m['name']} has no mountPath")
                continue
            mounts[m["mountPath"].rstrip("/")] = volumes.get(m["name"], {})
        commands = [("args", (c.get("command") or []) + (c.get("args") or []))]
        for probe in PROBES:
            if probe not in c:
                continue
            handlers = [h for h in PROBE_HANDLERS if h in c[probe]]
            if len(handlers) != 1:
                problems.append(f"{where}: {probe} needs exactly one of {PROBE_HANDLERS}, has {handlers}")
            if "exec" in c[probe]:
                commands.append((probe, get(c[probe], "exec", "command") or []))
        for what, command in commands:
            path = config_arg(command)
            if path is None:
                continue
            text = file_in_mounts(path, mounts, by_kind, "configMap", "ConfigMap", "name", problems,
                                  f"{where}: {what} --config")
            if text is not None:
                check_config_tls(text, path, mounts, by_kind, problems, f"{where}: {path}")


def file_in_mounts(path, mounts, by_kind, field, kind, name_key, problems, where):
    """The text of the file at `path` if it is a key of a mounted ConfigMap/Secret."""
    directory, key = os.path.split(path)
    volume = mounts.get(directory)
    if volume is None or field not in volume:
        problems.append(f"{where} {path}: {directory} is no mounted {kind}")
        return None
    obj = by_kind[kind].get(volume[field].get(name_key))
    if obj is None:
        return None  # reported with the volume
    data = dict(obj.get("data") or {})
    data.update(obj.get("stringData") or {})
    items = volume[field].get("items")
    if items is not None:
        data = {item["path"]: data.get(item["key"]) for item in items}
    if key not in data:
        problems.append(f"{where} {path}: {kind} {obj['metadata']['name']} has no key {key!r}")
        return None
    return data[key]


def check_config_tls(text, path, mounts, by_kind, problems, where):
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        problems.append(f"{where}: not YAML: {e}")
        return
    tls = config.get("tls") or {}
    if config.get("insecure"):
        return
    for key in ("cert", "key", "ca"):
        if key not in tls:
            problems.append(f"{where}: no tls.{key}")
            continue
        file_in_mounts(tls[key], mounts, by_kind, "secret", "Secret", "secretName", problems, f"{where}: tls.{key}")
    if tls.get("crl"):
        file_in_mounts(tls["crl"], mounts, by_kind, "secret", "Secret", "secretName", problems, f"{where}: tls.crl")


def check_service(doc, workloads, problems):
    where = name_of(doc)
    selector = get(doc, "spec", "selector") or {}
    selected = [w for w in workloads
                if all((get(w, "spec", "template", "metadata", "labels") or {}).get(k) == v for k, v in selector.items())]
    if not selected:
        problems.append(f"{where}: selects no workload")
        return
    port_names = {p.get("name") for w in selected for c in get(w, "spec", "template", "spec", "containers") or []
                  for p in c.get("ports", [])}
    port_numbers = {p.get("containerPort") for w in selected
                    for c in get(w, "spec", "template", "spec", "containers") or [] for p in c.get("ports", [])}
    for port in get(doc, "spec", "ports") or []:
        target = port.get("targetPort", port.get("port"))
        if target not in port_names and target not in port_numbers:
            problems.append(f"{where}: targetPort {target!r} is no container port of {[name_of(w) for w in selected]}")


def validate(directory, schema_dir):
    problems = []
    docs = render(directory, problems)
    by_kind = {kind: {} for kind in KINDS}
    for doc in docs:
        check_structure(doc, problems)
        if doc.get("kind") in by_kind:
            name = get(doc, "metadata", "name")
            if name in by_kind[doc["kind"]]:
                problems.append(f"{name_of(doc)}: defined twice")
            by_kind[doc["kind"]][name] = doc
    namespaces = {get(d, "metadata", "namespace") for d in docs if d.get("kind") != "Namespace"}
    if len(namespaces) > 1:
        problems.append(f"objects in several namespaces: {sorted(map(str, namespaces))}")
    workloads = [d for d in docs if d.get("kind") in WORKLOADS]
    for doc in workloads:
        check_workload(doc, by_kind, problems)
    for doc in by_kind["Service"].values():
        check_service(doc, workloads, problems)
    if schema_dir is not None and docs:
        check_schemas(docs, schema_dir, problems)
    placeholders = sorted(name_of(d) for d in by_kind["Secret"].values()
                          if any("REPLACE" in str(v) for v in (d.get("stringData") or {}).values()))
    return docs, problems, placeholders


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--install-schemas", action="store_true",
                        help=f"npm install {SCHEMA_PACKAGE} into .cache/kubernetes-models if missing")
    parser.add_argument("dirs", nargs="*")
    args = parser.parse_args()
    dirs = args.dirs or [os.path.join(K8S, "base")] + sorted(
        os.path.join(K8S, "overlays", d) for d in os.listdir(os.path.join(K8S, "overlays")))
    schema_dir = schema_validator(args.install_schemas)
    print(f"schemas: {'kubernetes-models (Kubernetes 1.27 OpenAPI)' if schema_dir else 'none (no node or kubernetes-models; try --install-schemas)'}; "
          f"rendering: {'kubectl kustomize' if shutil.which('kubectl') else 'resources only'}")
    failed = False
    for directory in dirs:
        docs, problems, placeholders = validate(directory, schema_dir)
        kinds = ", ".join(f"{k} {sum(d.get('kind') == k for d in docs)}"
                          for k in KINDS if any(d.get("kind") == k for d in docs))
        print(f"{'ok  ' if not problems else 'FAIL'} {os.path.relpath(directory, ROOT)}: {len(docs)} documents ({kinds})")
        for problem in problems:
            print(f"  {problem}")
        if placeholders:
            print(f"  note: placeholder Secrets, to be replaced before use: {', '.join(placeholders)}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
