#!/usr/bin/env python3
"""Validates deploy/kubernetes/ the way a cluster would judge it.

1. Core kinds (Namespace, ConfigMap, DaemonSet, Service) against the
   Kubernetes OpenAPI schemas of each version in --k8s (kubernetes-validate,
   strict: an unknown field is an error, as with kubectl's strict field
   validation).
2. CRD kinds (ServiceMonitor, NetworkAttachmentDefinition, Kustomization)
   against the JSON schemas in schemas/ (jsonschema).
3. What the API server or the kubelet refuses beyond the schema, and what
   would silently not work: selectors that match nothing, ports and volumes
   named but not defined, hugepage requests != limits, hugepages without a
   CPU or memory request, a HugePages emptyDir without the matching
   request, a $(VAR) in args with no such env, a port name over 15
   characters.
4. With --cpumapd BIN: the ConfigMap's profile passes `BIN --check-config`.

    pip install kubernetes-validate   # brings jsonschema and PyYAML
    deploy/kubernetes/validate.py [--k8s 1.30,1.37] [--cpumapd target/release/cpumapd] [DIR]

Prints one line per check and exits 1 on the first failed file's errors
(all errors are printed).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import kubernetes_validate
import yaml

CORE_KINDS = {"Namespace", "ConfigMap", "DaemonSet", "Service"}
CRD_SCHEMAS = {
    "ServiceMonitor": "servicemonitor.json",
    "NetworkAttachmentDefinition": "networkattachmentdefinition.json",
    "Kustomization": "kustomization.json",
}


def load_all(d):
    docs = []
    for name in sorted(os.listdir(d)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(d, name)) as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    docs.append((name, doc))
    return docs


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def quantity(q):
    """A Kubernetes quantity in base units (enough of the grammar for here)."""
    s = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 10**3, "M": 10**6, "G": 10**9, "m": 1e-3}
    for u, f in sorted(units.items(), key=lambda x: -len(x[0])):
        if s.endswith(u):
            return float(s[: -len(u)]) * f
    return float(s)


def semantic(docs):
    errs = []
    by_kind = {}
    for name, d in docs:
        by_kind.setdefault(d.get("kind"), []).append((name, d))
    services = by_kind.get("Service", [])
    for name, ds in by_kind.get("DaemonSet", []):
        spec = ds["spec"]
        tmpl = spec["template"]
        labels = tmpl["metadata"].get("labels", {})
        if not matches(spec["selector"].get("matchLabels"), labels):
            errs.append(f"{name}: spec.selector does not match the pod template's labels")
        pod = tmpl["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        requested = {}
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name}: container {c['name']}"
            res = c.get("resources", {})
            req, lim = res.get("requests", {}), res.get("limits", {})
            for k in set(req) | set(lim):
                if k.startswith("hugepages-"):
                    if k not in req or k not in lim or quantity(req[k]) != quantity(lim[k]):
                        errs.append(f"{where}: {k} requests must equal limits")
                    if "cpu" not in req and "memory" not in req:
                        errs.append(f"{where}: {k} needs a cpu or memory request too")
                    requested[k] = True
            for k in ("cpu", "memory"):
                if k in req and k in lim and quantity(req[k]) > quantity(lim[k]):
                    errs.append(f"{where}: {k} request above its limit")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    errs.append(f"{where}: mounts volume {m['name']}, which the pod does not define")
            env = {e["name"] for e in c.get("env", [])}
            for a in c.get("args", []) + c.get("command", []):
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                    if var not in env:
                        errs.append(f"{where}: args use $({var}) but env has no {var}")
            for p in c.get("ports", []):
                if len(p.get("name", "")) > 15:
                    errs.append(f"{where}: port name {p['name']} is over 15 characters")
            if c.get("image", "").endswith(":latest") or ":" not in c.get("image", ""):
                errs.append(f"{where}: pin the image to a version, not latest")
        # Exclusive CPUs from the static CPU manager need Guaranteed QoS with
        # whole CPUs for the dataplane container.
        main = pod["containers"][0]
        res = main.get("resources", {})
        cpu_r, cpu_l = res.get("requests", {}).get("cpu"), res.get("limits", {}).get("cpu")
        if cpu_r is None or cpu_r != cpu_l or quantity(cpu_r) != int(quantity(cpu_r)):
            errs.append(f"{name}: {main['name']} needs whole CPUs with requests == limits (Guaranteed QoS) for exclusive cores")
        for v in volumes.values():
            medium = v.get("emptyDir", {}).get("medium", "")
            if medium.startswith("HugePages-"):
                want = "hugepages-" + medium[len("HugePages-"):]
                if want not in requested:
                    errs.append(f"{name}: volume {v['name']} uses {medium} but no container requests {want}")
            cm = v.get("configMap", {}).get("name")
            if cm and not any(d["metadata"]["name"] == cm for _, d in by_kind.get("ConfigMap", [])):
                errs.append(f"{name}: volume {v['name']} uses ConfigMap {cm}, which is not here")
        ports = {p["name"] for c in pod["containers"] for p in c.get("ports", []) if "name" in p}
        for sname, svc in services:
            if matches(svc["spec"].get("selector"), labels):
                for p in svc["spec"]["ports"]:
                    tp = p.get("targetPort")
                    if isinstance(tp, str) and tp not in ports:
                        errs.append(f"{sname}: targetPort {tp} is not a container port of {name}")
        if not any(matches(s["spec"].get("selector"), labels) for _, s in services):
            errs.append(f"{name}: no Service selects its pods")
    for name, sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"].get("matchLabels", {})
        nss = sm["spec"].get("namespaceSelector", {}).get("matchNames") or [sm["metadata"].get("namespace")]
        hits = [s for _, s in services
                if matches(sel, s["metadata"].get("labels", {})) and s["metadata"].get("namespace") in nss]
        if not hits:
            errs.append(f"{name}: its selector matches no Service")
        for e in sm["spec"]["endpoints"]:
            if "port" in e and not any(e["port"] == p.get("name") for s in hits for p in s["spec"]["ports"]):
                errs.append(f"{name}: endpoint port {e['port']} is not a named port of the selected Service")
    for name, nad in by_kind.get("NetworkAttachmentDefinition", []):
        try:
            json.loads(nad["spec"]["config"])
        except ValueError as e:
            errs.append(f"{name}: spec.config is not JSON: {e}")
    return errs


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default=here)
    ap.add_argument("--k8s", default="1.30,1.37", help="Kubernetes versions, comma separated")
    ap.add_argument("--cpumapd", help="a cpumapd binary: check the ConfigMap's profile with it")
    a = ap.parse_args()
    docs = load_all(a.dir)
    errors = []
    listed = set()
    for name, d in docs:
        kind = d.get("kind")
        if kind in CORE_KINDS:
            for v in a.k8s.split(","):
                try:
                    kubernetes_validate.validate(d, v, strict=True)
                    print(f"ok   {name}: {kind} against Kubernetes {v} (strict)")
                except kubernetes_validate.ValidationError as e:
                    errors.append(f"{name}: {kind} against {v}: {e.message} at {'.'.join(map(str, e.path))}")
                except kubernetes_validate.utils.SchemaNotFoundError as e:
                    errors.append(f"{name}: no schema for {kind} in Kubernetes {v}: {e}")
        elif kind in CRD_SCHEMAS:
            with open(os.path.join(here, "schemas", CRD_SCHEMAS[kind])) as f:
                schema = json.load(f)
            errs = sorted(jsonschema.Draft202012Validator(schema).iter_errors(d), key=str)
            for e in errs:
                errors.append(f"{name}: {kind}: {e.message} at {'.'.join(map(str, e.path))}")
            if not errs:
                print(f"ok   {name}: {kind} against schemas/{CRD_SCHEMAS[kind]}")
            if kind == "Kustomization":
                listed = set(d["resources"])
                for r in d["resources"]:
                    if not os.path.exists(os.path.join(a.dir, r)):
                        errors.append(f"{name}: resource {r} does not exist")
        else:
            errors.append(f"{name}: kind {kind} has no schema here: add one to schemas/")
    files = {n for n, d in docs if d.get("kind") not in ("Kustomization", "NetworkAttachmentDefinition")}
    for f in sorted(files - listed):
        errors.append(f"kustomization.yaml does not list {f}")
    sem = semantic(docs)
    errors += sem
    if not sem:
        print("ok   cross-references: selectors, ports, volumes, resources, env")
    if a.cpumapd:
        for name, d in docs:
            if d.get("kind") == "ConfigMap" and "cpumapd.toml" in d.get("data", {}):
                with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as t:
                    t.write(d["data"]["cpumapd.toml"])
                r = subprocess.run([a.cpumapd, "--check-config", t.name], capture_output=True, text=True)
                os.unlink(t.name)
                if r.returncode != 0:
                    errors.append(f"{name}: cpumapd --check-config refused the profile: {r.stderr.strip()}")
                else:
                    print(f"ok   {name}: cpumapd --check-config accepts cpumapd.toml")
    for e in errors:
        print(f"FAIL {e}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
