#!/usr/bin/env python3
"""Structural checks over one rendered overlay (`kubectl kustomize` output), run by check.sh.

Usage: check_manifests.py OVERLAY_NAME RENDERED.yaml OUT_DIR

Writes OUT_DIR/core.yaml (every object kubernetes-validate has a schema for) and checks, with a
line per failure and exit 1 on any:
- the CRD kinds (ServiceMonitor, PrometheusRule), which have no schema there: parsed, apiVersion
  and kind, and the fields Prometheus Operator needs;
- the pod shape that must not regress: fincode-sidecar is a native sidecar (an initContainer with
  restartPolicy Always), its probes hit /healthz and /readyz on the admin port, no container can
  run as root, read-only root filesystem, no privilege escalation, ALL capabilities dropped,
  seccomp RuntimeDefault, requests and limits set, terminationGracePeriodSeconds above the drain;
- the config in the ConfigMap: every `*_env` / `secret_envs` variable it names is filled from a
  Secret in the sidecar's env; the store and audit paths lie on the mounted volume;
- the overlay's own promises (single-replica: 1 replica, Recreate, SQLite; postgres: 3 replicas,
  RollingUpdate, [store] url, no SQLite).
"""
import pathlib
import sys
import tomllib

import yaml

CRD_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
SIDECAR = "fincode-sidecar"
ADMIN_PORT = 9090
# The sidecar's drain (src/run.rs): app calls, webhook receipts and webhook deliveries share
# `shutdown.grace` (default 25 s); then logout (auth.logout_timeout, default 5 s), the audit
# trail's last checkpoint (up to 5 s) and the last spans (up to 5 s) follow.
DEFAULT_GRACE_SECONDS = 25
AFTER_GRACE_SECONDS = 15

failures: list[str] = []


def fail(msg: str) -> None:
    failures.append(msg)


def check_crd(doc: dict) -> None:
    kind, name = doc["kind"], doc.get("metadata", {}).get("name")
    if doc.get("apiVersion") != CRD_KINDS[kind]:
        fail(f"{kind}/{name}: apiVersion {doc.get('apiVersion')!r}, want {CRD_KINDS[kind]!r}")
    if not name:
        fail(f"{kind}: no metadata.name")
    spec = doc.get("spec") or {}
    if kind == "ServiceMonitor":
        eps = spec.get("endpoints") or []
        if not spec.get("selector", {}).get("matchLabels"):
            fail(f"ServiceMonitor/{name}: no spec.selector.matchLabels")
        if not any(e.get("port") == "admin" and e.get("path") == "/metrics" for e in eps):
            fail(f"ServiceMonitor/{name}: no endpoint port admin path /metrics")
    if kind == "PrometheusRule":
        groups = spec.get("groups") or []
        if not groups:
            fail(f"PrometheusRule/{name}: no spec.groups")
        for g in groups:
            for r in g.get("rules") or []:
                if not r.get("expr") or not (r.get("alert") or r.get("record")):
                    fail(f"PrometheusRule/{name}: group {g.get('name')}: a rule lacks expr or alert/record")


def effective(ctr: dict, pod_sc: dict, key: str):
    sc = ctr.get("securityContext") or {}
    return sc.get(key, pod_sc.get(key))


def check_container(ctr: dict, pod_sc: dict, where: str) -> None:
    name = f"{where} container {ctr['name']}"
    sc = ctr.get("securityContext") or {}
    if effective(ctr, pod_sc, "runAsNonRoot") is not True:
        fail(f"{name}: runAsNonRoot is not true")
    uid = effective(ctr, pod_sc, "runAsUser")
    if not isinstance(uid, int) or uid == 0:
        fail(f"{name}: runAsUser must be a numeric non-zero uid, is {uid!r}")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(f"{name}: readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{name}: allowPrivilegeEscalation is not false")
    if sc.get("privileged"):
        fail(f"{name}: privileged")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        fail(f"{name}: capabilities.drop lacks ALL")
    if (sc.get("capabilities") or {}).get("add"):
        fail(f"{name}: adds capabilities")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        fail(f"{name}: seccompProfile {seccomp!r}, want RuntimeDefault")
    res = ctr.get("resources") or {}
    if not (res.get("requests") or {}).get("memory") or not (res.get("limits") or {}).get("memory"):
        fail(f"{name}: memory request and limit required")


def check_probe(ctr: dict, probe: str, path: str) -> None:
    get = ((ctr.get(probe) or {}).get("httpGet")) or {}
    port = get.get("port")
    ports = {p.get("name"): p.get("containerPort") for p in ctr.get("ports") or []}
    if get.get("path") != path or ports.get(port, port) != ADMIN_PORT:
        fail(f"sidecar {probe}: want GET {path} on the admin port {ADMIN_PORT}, got {get!r}")


def duration_seconds(text, default: int) -> int:
    """A humantime duration of whole seconds or minutes ("40s", "1m"), as the config writes it."""
    if text is None:
        return default
    units = {"s": 1, "m": 60}
    try:
        return int(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError, IndexError):
        fail(f"config shutdown.grace = {text!r}: write whole seconds or minutes, e.g. \"25s\"")
        return default


def env_names(cfg, prefix="") -> list[tuple[str, str]]:
    """(config key, variable name) for every key naming an environment variable."""
    out = []
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += env_names(v, key + ".")
        elif k.endswith("_env") and isinstance(v, str):
            out.append((key, v))
        elif k == "secret_envs" and isinstance(v, list):
            out += [(key, x) for x in v]
    return out


def main() -> int:
    overlay, rendered, out_dir = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    core = []
    kinds: dict[str, list[dict]] = {}
    for d in docs:
        if not d.get("apiVersion") or not d.get("kind"):
            fail(f"an object without apiVersion/kind: {str(d)[:80]}")
            continue
        kinds.setdefault(d["kind"], []).append(d)
        if d["kind"] in CRD_KINDS:
            print(f"  {overlay}: skip schema validation of {d['kind']}/{d['metadata']['name']} "
                  f"(a CRD, not in kubernetes-validate's schemas): checked by parsing, apiVersion, kind and fields")
            check_crd(d)
        else:
            core.append(d)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "core.yaml").write_text(yaml.safe_dump_all(core, sort_keys=False))

    for want in ["Deployment", "ConfigMap", "Service", "NetworkPolicy", "ServiceMonitor",
                 "PrometheusRule", "PersistentVolumeClaim"]:
        if want not in kinds:
            fail(f"no {want} rendered")
    if "Secret" in kinds:
        fail("a Secret is rendered: secrets are never shipped in the manifests")
    if failures:
        return report(overlay)

    (dep,) = kinds["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext") or {}
    if (pod_sc.get("runAsUser") == 0) or pod_sc.get("runAsNonRoot") is not True:
        fail("pod securityContext: runAsNonRoot must be true and runAsUser non-zero")
    sidecars = [c for c in pod.get("initContainers") or [] if c["name"] == SIDECAR]
    if len(sidecars) != 1:
        fail(f"{SIDECAR} is not an initContainer (native sidecar)")
        return report(overlay)
    sidecar = sidecars[0]
    if sidecar.get("restartPolicy") != "Always":
        fail(f"{SIDECAR} initContainer restartPolicy is {sidecar.get('restartPolicy')!r}, want Always")
    if any(c["name"] == SIDECAR for c in pod.get("containers") or []):
        fail(f"{SIDECAR} is also a regular container")
    for c in pod.get("initContainers") or []:
        check_container(c, pod_sc, "init")
    for c in pod.get("containers") or []:
        check_container(c, pod_sc, "app")
    sres = sidecar.get("resources") or {}
    for k in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(sres.get(k) or {}):
            fail(f"sidecar resources.{k} must set cpu and memory")
    check_probe(sidecar, "startupProbe", "/healthz")
    check_probe(sidecar, "livenessProbe", "/healthz")
    check_probe(sidecar, "readinessProbe", "/readyz")
    pod_grace = pod.get("terminationGracePeriodSeconds", 30)
    if not any(c.get("env") and any(e.get("value") == "http://127.0.0.1:8080" for e in c["env"])
               for c in pod.get("containers") or []):
        fail("no app container is pointed at http://127.0.0.1:8080")

    # The config the sidecar will read.
    mounts = {m["mountPath"]: m for m in sidecar.get("volumeMounts") or []}
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    cfg_mount = mounts.get("/etc/fincode-sidecar")
    cm_name = volumes.get(cfg_mount["name"], {}).get("configMap", {}).get("name") if cfg_mount else None
    cms = [c for c in kinds["ConfigMap"] if c["metadata"]["name"] == cm_name]
    if len(cms) != 1 or "config.toml" not in cms[0].get("data", {}):
        fail(f"no ConfigMap {cm_name!r} with config.toml mounted at /etc/fincode-sidecar")
        return report(overlay)
    cfg = tomllib.loads(cms[0]["data"]["config.toml"])
    drain = duration_seconds(cfg.get("shutdown", {}).get("grace"), DEFAULT_GRACE_SECONDS) + AFTER_GRACE_SECONDS
    if pod_grace <= drain:
        fail(f"terminationGracePeriodSeconds {pod_grace} must be above the sidecar's drain "
             f"(shutdown.grace + {AFTER_GRACE_SECONDS} s = {drain} s)")
    if cfg.get("listen", {}).get("egress") != "127.0.0.1:8080":
        fail("config listen.egress must be 127.0.0.1:8080")
    if cfg.get("listen", {}).get("admin") != f"0.0.0.0:{ADMIN_PORT}":
        fail(f"config listen.admin must be 0.0.0.0:{ADMIN_PORT} so kubelet can probe it")
    if not cfg.get("webhooks", {}).get("enabled") or not cfg.get("audit", {}).get("enabled"):
        fail("config: webhooks and audit must be enabled")
    wh_port = int(cfg["webhooks"]["listen"].rsplit(":", 1)[1])
    svc_ports = {p["port"] for s in kinds["Service"] for p in s["spec"]["ports"]}
    if wh_port not in svc_ports:
        fail(f"no Service exposes the webhook port {wh_port}")
    env = {e["name"]: e for e in sidecar.get("env") or []}
    for key, var in env_names(cfg):
        ref = (env.get(var) or {}).get("valueFrom", {}).get("secretKeyRef")
        if not ref:
            fail(f"config {key} names {var}, which the sidecar does not get from a Secret")
    for e in sidecar.get("env") or []:
        if "value" in e and any(w in e["name"].upper() for w in ("PASSWORD", "SECRET", "KEY", "TOKEN")):
            fail(f"sidecar env {e['name']} has an inline value: secrets come from a Secret")

    def on_volume(path: str, claim_needed: bool) -> None:
        for mp, m in mounts.items():
            if path.startswith(mp.rstrip("/") + "/"):
                vol = volumes.get(m["name"], {})
                if claim_needed and "persistentVolumeClaim" not in vol:
                    fail(f"{path} is on volume {m['name']}, not a PersistentVolumeClaim")
                return
        fail(f"{path} is on the read-only root filesystem (no volume mounted there)")

    on_volume(cfg["audit"]["dir"] + "/", True)
    if "/tmp" not in mounts or "emptyDir" not in volumes.get(mounts["/tmp"]["name"], {}):
        fail("no emptyDir mounted at /tmp in the sidecar")

    store = cfg.get("store", {})
    strategy = dep["spec"].get("strategy", {}).get("type")
    replicas = dep["spec"].get("replicas")
    if overlay == "single-replica":
        if replicas != 1 or strategy != "Recreate":
            fail(f"single-replica: replicas {replicas}, strategy {strategy}; want 1, Recreate")
        if "sqlite_path" not in store or "url" in store:
            fail("single-replica: the store must be SQLite (store.sqlite_path)")
        else:
            on_volume(store["sqlite_path"], True)
    elif overlay == "postgres":
        if replicas != 3 or strategy != "RollingUpdate":
            fail(f"postgres: replicas {replicas}, strategy {strategy}; want 3, RollingUpdate")
        if "url" not in store or "sqlite_path" in store:
            fail("postgres: the store must be [store] url, without sqlite_path")
        if store.get("password_env") != "FINCODE_STORE_PASSWORD":
            fail("postgres: store.password_env must be FINCODE_STORE_PASSWORD (from the Secret)")
    else:
        fail(f"unknown overlay {overlay}: add its promises to check_manifests.py")
    return report(overlay)


def report(overlay: str) -> int:
    for f in failures:
        print(f"  FAIL {overlay}: {f}")
    if not failures:
        print(f"  ok {overlay}: native sidecar, probes, security context, secrets, volumes, overlay shape")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
