#!/usr/bin/env python3
"""Consistency checks for deploy/, run by .ci/deploy-check.

The schema validator (kubernetes-validate) says whether each object is well-formed; hadolint and
systemd-analyze say the same of the Dockerfile and the unit. None of them knows that litd's
--autopilot.address must be litgate's relay address, that the admin port the probes hit must be
the one litgate.toml opens, or that the Service must not expose litd. This script checks those
promises across files, so that an edit to one side that forgets the other fails CI.

Subcommands:
  k8s RENDERED.yaml OUTDIR [LABEL]
                              check a `kubectl kustomize` rendering (of LABEL, for messages);
                              write the embedded litgate.toml to OUTDIR/litgate.toml for
                              `litgate check-config`
  crds RENDERED.yaml CORE_OUT LABEL
                              validate the prometheus-operator objects (ServiceMonitor) against
                              that project's schema; write the other objects to CORE_OUT
  mutate RENDERED.yaml OUT    write a copy with an unknown field in the Pod spec (CI asserts that
                              the strict schema validation rejects it)
  dockerfile Dockerfile IGNORE CONFIG
                              structural checks of the Dockerfile and its ignore file against
                              the default config
  systemd UNIT CONFIG         the unit's paths, user, stop timeout and hardening against the
                              host config

Needs Python >= 3.11 (tomllib), PyYAML (a dependency of kubernetes-validate) and, for `crds`,
cloudcoil-models-prometheus-operator.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import sys
import tomllib
from pathlib import Path

import yaml

LITGATE = "litgate"
LITD = "litd"
CONFIG_KEY = "litgate.toml"

errors: list[str] = []


def fail(msg: str) -> None:
    errors.append(msg)


def expect(cond: bool, msg: str) -> bool:
    if not cond:
        fail(msg)
    return cond


def host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def flag(args: list[str], name: str) -> str | None:
    """Value of --name=value (or presence of --name as "") in a litd argument list."""
    for a in args:
        if a == f"--{name}":
            return ""
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def under(path: str, mount: str) -> bool:
    path, mount = posixpath.normpath(path), posixpath.normpath(mount)
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def mount_for(container: dict, path: str) -> dict | None:
    best = None
    for m in container.get("volumeMounts", []):
        if under(path, m["mountPath"]) and (
            best is None or len(m["mountPath"]) > len(best["mountPath"])
        ):
            best = m
    return best


def port_number(container: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def check_file_source(
    label: str, key: str, path: str, container: dict, volumes: dict, require_present: bool
) -> dict | None:
    """A path from litgate.toml must come from a volume mounted in the litgate container; if it
    comes from a Secret with `items`, the file name must be one of them; a Secret litgate needs
    must not be optional (a missing file would stop litgate instead of keeping the Pod pending)."""
    m = mount_for(container, path)
    if not expect(m is not None, f"{label}: {key} = {path!r} is not under any volumeMount of {LITGATE}"):
        return None
    vol = volumes.get(m["name"])
    if not expect(vol is not None, f"{label}: volumeMount {m['name']} has no volume"):
        return None
    secret = vol.get("secret")
    if secret is not None:
        rel = posixpath.relpath(path, m["mountPath"])
        items = secret.get("items")
        if items is not None:
            expect(
                rel in [i["path"] for i in items],
                f"{label}: {key} = {path!r} but Secret {secret['secretName']} mounts only "
                f"{[i['path'] for i in items]}",
            )
        if require_present:
            expect(
                not secret.get("optional", False),
                f"{label}: {key} uses Secret {secret['secretName']}, which is optional: make it "
                "required",
            )
    return vol


def check_security(label: str, c: dict) -> None:
    sc = c.get("securityContext", {})
    name = c["name"]
    expect(sc.get("readOnlyRootFilesystem") is True, f"{label}: {name}: readOnlyRootFilesystem")
    expect(sc.get("allowPrivilegeEscalation") is False, f"{label}: {name}: allowPrivilegeEscalation false")
    expect("ALL" in sc.get("capabilities", {}).get("drop", []), f"{label}: {name}: capabilities drop ALL")
    expect(not sc.get("capabilities", {}).get("add"), f"{label}: {name}: no capabilities added")
    expect(not sc.get("privileged", False), f"{label}: {name}: not privileged")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            expect(r in res.get(kind, {}), f"{label}: {name}: resources.{kind}.{r} is set")


def cmd_k8s(rendered: Path, outdir: Path, label: str) -> None:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    deps = by_kind.get("Deployment", [])
    if not expect(len(deps) == 1, f"{label}: expected one Deployment, found {len(deps)}"):
        return
    dep = deps[0]
    spec = dep["spec"]
    expect(spec.get("replicas") == 1, f"{label}: Deployment replicas must be 1 (sled lock)")
    expect(
        spec.get("strategy", {}).get("type") == "Recreate",
        f"{label}: Deployment strategy must be Recreate (sled's single-process lock)",
    )
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    psc = pod.get("securityContext", {})
    expect(psc.get("runAsNonRoot") is True, f"{label}: Pod runAsNonRoot")
    expect(psc.get("runAsUser", 0) != 0, f"{label}: Pod runAsUser is not root")
    expect(
        psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        f"{label}: Pod seccompProfile RuntimeDefault",
    )
    volumes = {v["name"]: v for v in pod.get("volumes", [])}

    inits = {c["name"]: c for c in pod.get("initContainers", [])}
    mains = {c["name"]: c for c in pod.get("containers", [])}
    gate = inits.get(LITGATE)
    if not expect(gate is not None, f"{label}: {LITGATE} must be an initContainer (native sidecar)"):
        return
    expect(gate.get("restartPolicy") == "Always", f"{label}: {LITGATE} needs restartPolicy: Always")
    expect(LITGATE not in mains, f"{label}: {LITGATE} must not also be a regular container")
    litd = mains.get(LITD)
    if not expect(litd is not None, f"{label}: no {LITD} container"):
        return
    for c in list(inits.values()) + list(mains.values()):
        check_security(label, c)

    # The config litgate reads: the ConfigMap mounted where its args point.
    args = gate.get("args", [])
    expect(
        args[:2] == ["run", "--config"] and len(args) == 3,
        f"{label}: {LITGATE} args must be run --config FILE, got {args}",
    )
    config_path = args[2] if len(args) == 3 else "/etc/litgate/litgate.toml"
    m = mount_for(gate, config_path)
    if not expect(m is not None, f"{label}: {config_path} is not mounted in {LITGATE}"):
        return
    cm_name = volumes.get(m["name"], {}).get("configMap", {}).get("name")
    cms = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    if not expect(cm_name in cms, f"{label}: ConfigMap {cm_name!r} for {config_path} is not in the rendering"):
        return
    text = cms[cm_name].get("data", {}).get(posixpath.relpath(config_path, m["mountPath"]))
    if not expect(text is not None, f"{label}: ConfigMap {cm_name} has no key for {config_path}"):
        return
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / CONFIG_KEY).write_text(text)
    cfg = tomllib.loads(text)
    listen = cfg.get("listen", {})
    upstream = cfg.get("upstream", {})
    relay = cfg.get("autopilot", {}).get("relay", {})
    admin = cfg.get("admin", {})
    store = cfg.get("store", {})

    # litd's wiring matches litgate's config.
    largs = (litd.get("command") or []) + litd.get("args", [])
    https = flag(largs, "httpslisten")
    up_addr = upstream.get("addr", "127.0.0.1:8443")
    if expect(https is not None, f"{label}: {LITD} needs --httpslisten"):
        expect(https == up_addr, f"{label}: {LITD} --httpslisten={https} but upstream.addr = {up_addr}")
        expect(is_loopback(host_port(https)[0]), f"{label}: {LITD} --httpslisten must be loopback, got {https}")
    ap = flag(largs, "autopilot.address")
    relay_addr = relay.get("addr", "127.0.0.1:12010")
    if expect(ap is not None, f"{label}: {LITD} needs --autopilot.address"):
        expect(ap == relay_addr, f"{label}: {LITD} --autopilot.address={ap} but autopilot.relay.addr = {relay_addr}")
        expect(is_loopback(host_port(ap)[0]), f"{label}: the relay must be on loopback, got {ap}")
        expect(flag(largs, "autopilot.insecure") is not None, f"{label}: {LITD} needs --autopilot.insecure (plaintext relay)")
    pinned = upstream.get("tls_cert", "")
    if not upstream.get("plaintext", False):
        served = flag(largs, "tlscertpath")
        expect(
            served == pinned,
            f"{label}: litgate pins upstream.tls_cert = {pinned!r} but {LITD} serves --tlscertpath={served}",
        )
        check_file_source(label, "upstream.tls_cert", pinned, gate, volumes, True)
        def secret_of(c: dict) -> str | None:
            m = mount_for(c, pinned)
            return volumes.get(m["name"], {}).get("secret", {}).get("secretName") if m else None

        expect(
            secret_of(litd) is not None and secret_of(litd) == secret_of(gate),
            f"{label}: {pinned} must come from the same Secret in {LITD} and {LITGATE}",
        )

    for key, section in (("tls_cert", listen), ("tls_key", listen)):
        if section.get(key):
            check_file_source(label, f"listen.{key}", section[key], gate, volumes, True)
    if upstream.get("macaroon"):
        check_file_source(label, "upstream.macaroon", upstream["macaroon"], gate, volumes, True)

    data_dir = store.get("data_dir", "/var/lib/litgate")
    dm = mount_for(gate, data_dir)
    if expect(dm is not None, f"{label}: store.data_dir {data_dir} is not mounted"):
        claim = volumes.get(dm["name"], {}).get("persistentVolumeClaim", {}).get("claimName")
        expect(claim is not None, f"{label}: store.data_dir must be on a PersistentVolumeClaim (the ledger)")
        expect(not dm.get("readOnly", False), f"{label}: store.data_dir must be writable")
        pvcs = {p["metadata"]["name"] for p in by_kind.get("PersistentVolumeClaim", [])}
        expect(claim in pvcs, f"{label}: PVC {claim} is not in the rendering")

    # Ports: the probes hit the admin port litgate opens, on an address the kubelet reaches.
    admin_host, admin_port = host_port(admin.get("addr", "127.0.0.1:9445"))
    expect(
        not is_loopback(admin_host),
        f"{label}: admin.addr {admin.get('addr')} is loopback: kubelet probes come from the node",
    )
    for probe, path in (("startupProbe", "/live"), ("readinessProbe", "/ready"), ("livenessProbe", "/live")):
        p = gate.get(probe, {}).get("httpGet")
        if expect(p is not None, f"{label}: {LITGATE} needs an httpGet {probe}"):
            expect(p.get("path") == path, f"{label}: {probe} must ask {path}, got {p.get('path')}")
            expect(
                port_number(gate, p.get("port")) == admin_port,
                f"{label}: {probe} port {p.get('port')} is not admin.addr's {admin_port}",
            )
    listen_host, listen_port = host_port(listen.get("addr", "0.0.0.0:8445"))
    expect(is_unspecified(listen_host), f"{label}: listen.addr must listen on the Pod's addresses")
    expect(port_number(gate, "https") == listen_port, f"{label}: container port https != listen.addr port {listen_port}")

    # One Service for litgate's public port and, apart, at most one for its admin port (metrics):
    # never litd's port, the relay, or both faces in one Service.
    svcs = by_kind.get("Service", [])
    by_target: dict[int, list[dict]] = {listen_port: [], admin_port: []}
    for svc in svcs:
        name = svc["metadata"]["name"]
        sel = svc["spec"].get("selector", {})
        expect(
            sel and all(pod_labels.get(k) == v for k, v in sel.items()),
            f"{label}: Service {name} does not select the Pod",
        )
        targets = [port_number(gate, p.get("targetPort", p["port"])) for p in svc["spec"]["ports"]]
        if expect(
            targets in ([listen_port], [admin_port]),
            f"{label}: Service {name} must target only port {listen_port} (public) or only "
            f"{admin_port} (admin), got {targets}",
        ):
            by_target[targets[0]].append(svc)
    expect(len(by_target[listen_port]) == 1, f"{label}: expected one Service for port {listen_port}")
    expect(len(by_target[admin_port]) <= 1, f"{label}: expected at most one Service for port {admin_port}")

    # A ServiceMonitor scrapes /metrics through the admin Service's named port.
    monitors = by_kind.get("ServiceMonitor", [])
    for sm in monitors:
        name = sm["metadata"]["name"]
        want = sm["spec"].get("selector", {}).get("matchLabels", {})
        picked = [
            svc for svc in svcs
            if want and all(svc["metadata"].get("labels", {}).get(k) == v for k, v in want.items())
        ]
        expect(
            picked != [] and all(svc in by_target[admin_port] for svc in picked),
            f"{label}: ServiceMonitor {name} must select the admin Service, selects "
            f"{[svc['metadata']['name'] for svc in picked]}",
        )
        for ep in sm["spec"].get("endpoints", []):
            expect(ep.get("path") == "/metrics", f"{label}: ServiceMonitor {name} must scrape /metrics")
            expect(
                all(ep.get("port") in [p.get("name") for p in svc["spec"]["ports"]] for svc in picked),
                f"{label}: ServiceMonitor {name} port {ep.get('port')!r} is not a port name of the admin Service",
            )

    # NetworkPolicy: both directions restricted; in, only the public and admin ports.
    nps = by_kind.get("NetworkPolicy", [])
    if expect(len(nps) == 1, f"{label}: expected one NetworkPolicy, found {len(nps)}"):
        np = nps[0]["spec"]
        sel = np.get("podSelector", {}).get("matchLabels", {})
        expect(sel and all(pod_labels.get(k) == v for k, v in sel.items()), f"{label}: NetworkPolicy does not select the Pod")
        expect(set(np.get("policyTypes", [])) == {"Ingress", "Egress"}, f"{label}: NetworkPolicy must restrict Ingress and Egress")
        in_ports = {p.get("port") for r in np.get("ingress", []) for p in r.get("ports", [])}
        expect(None not in in_ports, f"{label}: every ingress rule must name its ports")
        expect(in_ports <= {listen_port, admin_port, "https", "admin"}, f"{label}: ingress admits ports {in_ports}")
        out_ports = {p.get("port") for r in np.get("egress", []) for p in r.get("ports", [])}
        server_port = host_port(cfg.get("autopilot", {}).get("server", "autopilot.lightning.finance:12010"))[1]
        for need, why in ((53, "DNS"), (server_port, "the Autopilot server"), (443, "the LNC mailbox")):
            expect(need in out_ports, f"{label}: egress does not admit port {need} ({why})")
        expect(None not in out_ports, f"{label}: every egress rule must name its ports")

    if not errors:
        print(
            f"ok   wiring of {label}: {LITGATE} native sidecar; {LITD} --httpslisten={https} "
            f"--autopilot.address={ap} --tlscertpath={pinned or '-'} (pinned); probes on "
            f":{admin_port}; Services -> :{listen_port}, :{admin_port} apart; "
            f"{len(monitors)} ServiceMonitor(s) on /metrics; data on a PVC; Recreate"
        )


CRD_GROUP = "monitoring.coreos.com/"


def crd_problems(doc: dict) -> list[str]:
    """Schema problems of a prometheus-operator object, from the project's own published models
    (cloudcoil-models-prometheus-operator: pydantic models generated from prometheus-operator's
    CRDs). pydantic ignores unknown keys, so strictness is a round trip: every key given must
    come back."""
    from cloudcoil.models.prometheus_operator import v1

    kind = doc.get("kind", "")
    model = getattr(v1, kind, None)
    if model is None or doc.get("apiVersion") != CRD_GROUP + "v1":
        return [f"{doc.get('apiVersion')} {kind}: no schema known here"]
    try:
        back = model.model_validate(doc).model_dump(by_alias=True, exclude_unset=True, mode="json")
    except Exception as e:  # pydantic.ValidationError: the message names the field
        return [f"{kind} {doc['metadata'].get('name')}: {e}"]
    problems: list[str] = []

    def unknown(given, kept, where: str) -> None:
        if isinstance(given, dict) and isinstance(kept, dict):
            for k, v in given.items():
                if k not in kept:
                    problems.append(f"{kind} {doc['metadata'].get('name')}: unknown field {where}{k}")
                else:
                    unknown(v, kept[k], f"{where}{k}.")
        elif isinstance(given, list) and isinstance(kept, list):
            for i, (g, k) in enumerate(zip(given, kept)):
                unknown(g, k, f"{where}[{i}].")

    unknown(doc, back, "")
    return problems


def cmd_crds(rendered: Path, core_out: Path, label: str) -> None:
    """Validate the prometheus-operator objects of a rendering strictly (and prove the check
    rejects an unknown field); write the rest to CORE_OUT for kubernetes-validate, which knows
    only Kubernetes' own kinds."""
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    crds = [d for d in docs if d.get("apiVersion", "").startswith(CRD_GROUP)]
    core_out.write_text(yaml.safe_dump_all([d for d in docs if d not in crds]))
    for d in crds:
        for p in crd_problems(d):
            fail(f"{label}: {p}")
        bad = yaml.safe_load(yaml.safe_dump(d))
        bad["spec"]["notAField"] = True
        expect(crd_problems(bad) != [], f"{label}: the {d['kind']} schema check accepts an unknown field")
    if not errors:
        kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in crds)
        print(
            f"ok   {label}: {len(crds)} prometheus-operator object(s) {kinds} match "
            "prometheus-operator's schema (unknown fields rejected)"
        )


def cmd_mutate(rendered: Path, out: Path) -> None:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    for d in docs:
        if d["kind"] == "Deployment":
            d["spec"]["template"]["spec"]["initContainers"][0]["notAField"] = True
    out.write_text(yaml.safe_dump_all(docs))


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def ignore_allows(patterns: list[str], path: str) -> bool:
    """Whether a .dockerignore (last match wins) sends a top-level path."""
    allowed = True
    for p in patterns:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        pat = pat.rstrip("/")
        if pat == "*" or pat == path or re.fullmatch(pat.replace(".", r"\.").replace("*", "[^/]*"), path):
            allowed = neg
    return allowed


def cmd_dockerfile(dockerfile: Path, ignore: Path, config: Path) -> None:
    label = str(dockerfile)
    ins = dockerfile_instructions(dockerfile.read_text())
    # Base images come from ARGs declared before the first FROM (so a release can pin digests
    # with --build-arg): resolve their defaults.
    first_from = next((i for i, (w, _) in enumerate(ins) if w == "FROM"), len(ins))
    global_args = dict(
        rest.split("=", 1) for w, rest in ins[:first_from] if w == "ARG" and "=" in rest
    )
    for name, value in global_args.items():
        if "@" in value:
            expect(
                re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", value) is not None,
                f"{label}: ARG {name}={value} is not IMAGE@sha256:<64 hex>",
            )
    froms = [
        re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), rest)
        for word, rest in ins
        if word == "FROM"
    ]
    for f in froms:
        expect("$" not in f.split()[0], f"{label}: FROM {f}: an ARG without a default")
    expect(len(froms) >= 2, f"{label}: expected a multi-stage build")
    final = froms[-1].split()[0] if froms else ""
    expect("distroless" in final, f"{label}: runtime stage should be distroless (no shell), got {final}")
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    runtime = ins[last_from:]
    expect(not any(w == "RUN" for w, _ in runtime), f"{label}: the runtime stage must not RUN (no shell there)")
    users = [rest for w, rest in runtime if w == "USER"]
    if expect(users, f"{label}: runtime stage needs USER"):
        uid = users[-1].split(":")[0]
        expect(uid.isdigit() and uid != "0", f"{label}: USER must be a numeric non-root uid, got {users[-1]}")
    entry = [rest for w, rest in runtime if w == "ENTRYPOINT"]
    expect(entry and '"/usr/local/bin/litgate"' in entry[-1], f"{label}: ENTRYPOINT must be litgate (exec form)")
    cmd = [rest for w, rest in runtime if w == "CMD"]
    expect(
        cmd and cmd[-1].replace(" ", "") == '["run","--config","/etc/litgate/litgate.toml"]',
        f"{label}: CMD must be run --config /etc/litgate/litgate.toml",
    )
    vols = " ".join(rest for w, rest in runtime if w == "VOLUME")
    for v in ("/etc/litgate", "/var/lib/litgate"):
        expect(f'"{v}"' in vols, f"{label}: VOLUME {v} missing")
    labels = " ".join(rest for w, rest in runtime if w == "LABEL")
    for key, arg in (("version", "VERSION"), ("revision", "REVISION"), ("source", "SOURCE")):
        expect(
            f'org.opencontainers.image.{key}="${{{arg}}}"' in labels
            and any(w == "ARG" and rest.split("=")[0] == arg for w, rest in runtime),
            f"{label}: runtime LABEL org.opencontainers.image.{key} must come from ARG {arg}",
        )
    builder_env = " ".join(rest for w, rest in ins[:last_from] if w == "ENV")
    for setting in ("CARGO_PROFILE_RELEASE_DEBUG=false", "CARGO_PROFILE_RELEASE_STRIP=symbols"):
        expect(setting in builder_env, f"{label}: the builder must set {setting} (stripped binary)")
    cfg = tomllib.loads(config.read_text())
    want = {
        host_port(cfg["listen"]["addr"])[1],
        host_port(cfg["admin"]["addr"])[1],
        host_port(cfg["autopilot"]["relay"]["addr"])[1],
    }
    exposed = {int(p.split("/")[0]) for w, rest in runtime if w == "EXPOSE" for p in rest.split()}
    expect(exposed == want, f"{label}: EXPOSE {sorted(exposed)} != the default config's ports {sorted(want)}")
    expect(
        cfg["store"]["data_dir"] == "/var/lib/litgate",
        f"{label}: config's store.data_dir {cfg['store']['data_dir']} is not the VOLUME",
    )

    # Everything the build COPYs from the context (and every target Cargo.toml declares) must
    # survive the ignore file.
    patterns = [
        ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    root = dockerfile.resolve().parent.parent
    needed = {"Cargo.toml", "Cargo.lock", "build.rs", "proto", "src", "config"}
    manifest = tomllib.loads((root / "Cargo.toml").read_text())
    for kind, default_dir in (("bench", "benches"), ("test", "tests"), ("example", "examples"), ("bin", "src")):
        for t in manifest.get(kind, []):
            needed.add(t.get("path", default_dir).split("/")[0])
    for top in ("tests", "benches", "examples"):
        if (root / top).exists():
            needed.add(top)
    for path in sorted(needed):
        expect(ignore_allows(patterns, path), f"{ignore}: excludes {path}, which the build needs")
    expect(not ignore_allows(patterns, "target"), f"{ignore}: should exclude target/")
    expect(not ignore_allows(patterns, ".git"), f"{ignore}: should exclude .git/")
    if not errors:
        print(
            f"ok   structure of {label}: {len(froms)} stages, runtime {final}, USER {users[-1]}, "
            f"EXPOSE {sorted(exposed)}; OCI version/revision/source labels; stripped; "
            f"context sends {sorted(needed)}"
        )


def parse_duration(s: str) -> float:
    """Seconds in a litgate ("30s", "250ms") or systemd ("45s", "1min 30s", "45") duration."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total, found = 0.0, False
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", s.strip()):
        total += float(num) * units[unit or "s"]
        found = True
    if not found:
        raise ValueError(f"not a duration: {s!r}")
    return total


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def cmd_systemd(unit: Path, config: Path) -> None:
    label = str(unit)
    u = unit_settings(unit.read_text())
    cfg = tomllib.loads(config.read_text())

    def one(key: str) -> str:
        v = u.get(f"Service.{key}", [])
        expect(len(v) >= 1, f"{label}: {key}= is not set")
        return v[-1] if v else ""

    exec_start = one("ExecStart").split()
    expect(
        exec_start[1:3] == ["run", "--config"] and len(exec_start) == 4,
        f"{label}: ExecStart must be litgate run --config FILE",
    )
    conf_path = exec_start[3] if len(exec_start) == 4 else ""
    expect(
        conf_path == f"/etc/{one('ConfigurationDirectory')}/litgate.toml",
        f"{label}: ExecStart's config {conf_path} is not in ConfigurationDirectory=",
    )
    expect(
        cfg["store"]["data_dir"] == f"/var/lib/{one('StateDirectory')}",
        f"{label}: store.data_dir {cfg['store']['data_dir']} is not StateDirectory=",
    )
    expect(one("User") not in ("", "root", "0"), f"{label}: User= must be a non-root user")
    expect(one("KillSignal") == "SIGTERM", f"{label}: KillSignal=SIGTERM (litgate drains on it)")
    expect(one("Restart") == "on-failure", f"{label}: Restart=on-failure")
    drain = parse_duration(cfg.get("listen", {}).get("drain_timeout", "30s"))
    stop = parse_duration(one("TimeoutStopSec"))
    expect(stop > drain, f"{label}: TimeoutStopSec ({stop}s) must exceed listen.drain_timeout ({drain}s)")
    up = cfg.get("upstream", {})
    if not up.get("plaintext", False):
        binds = " ".join(u.get("Service.BindReadOnlyPaths", [])).split()
        bound = [b.split(":")[0].lstrip("-") for b in binds]
        expect(
            one("ProtectHome") == "tmpfs" and up["tls_cert"] in bound
            or not up["tls_cert"].startswith("/home/"),
            f"{label}: upstream.tls_cert {up['tls_cert']} is hidden by ProtectHome= unless it is in "
            "BindReadOnlyPaths=",
        )
    for key, want in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("SystemCallArchitectures", "native"),
    ):
        expect(one(key) == want, f"{label}: {key}={want} expected, got {one(key)!r}")
    expect(
        "@system-service" in u.get("Service.SystemCallFilter", []),
        f"{label}: SystemCallFilter=@system-service expected",
    )
    if not errors:
        print(
            f"ok   {label} against its config: User={one('User')}, config {conf_path}, data {cfg['store']['data_dir']}, "
            f"TimeoutStopSec {stop:g}s > drain_timeout {drain:g}s, pins {up.get('tls_cert')}"
        )


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[1] == "k8s" and len(argv) in (4, 5):
        cmd_k8s(Path(argv[2]), Path(argv[3]), argv[4] if len(argv) == 5 else argv[2])
    elif len(argv) >= 2 and argv[1] == "crds" and len(argv) == 5:
        cmd_crds(Path(argv[2]), Path(argv[3]), argv[4])
    elif len(argv) >= 2 and argv[1] == "mutate" and len(argv) == 4:
        cmd_mutate(Path(argv[2]), Path(argv[3]))
    elif len(argv) >= 2 and argv[1] == "dockerfile" and len(argv) == 5:
        cmd_dockerfile(Path(argv[2]), Path(argv[3]), Path(argv[4]))
    elif len(argv) >= 2 and argv[1] == "systemd" and len(argv) == 4:
        cmd_systemd(Path(argv[2]), Path(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 64
    for e in errors:
        print(f"FAIL {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
