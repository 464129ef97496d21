"""Turns benches/compare/run.sh's results.jsonl into the markdown table of the README.

Every figure is computed per round and then summarised over the rounds as median [min..max]:
throughput of each target, its ratio to direct and to the other proxies in the same round, and
(serial shape) the time it adds per call, 1/throughput minus direct's 1/throughput.
"""

import json
import os
import statistics as st

E = os.environ
rows = [json.loads(line) for line in open(E["RESULTS"])]
runs = [r for r in rows if r["kind"] == "run"]
TICK_US = 1e6 / int(E["CLK_TCK"])
ORDER = ["direct", "floor", "nginx", "envoy", "litgate"]
PROXIES = ["floor", "nginx", "envoy", "litgate"]


def uniq(xs):
    out = []
    for x in xs:
        if x not in out:
            out.append(x)
    return out


def med(xs):
    return st.median(xs)


def span(xs, fmt):
    """median [min..max] of per-round values."""
    return f"{med(xs):{fmt}} [{min(xs):{fmt}}..{max(xs):{fmt}}]"


def per_round(phase, shape, target, key):
    return {r["round"]: r[key] for r in runs
            if (r["phase"], r["shape"], r["target"]) == (phase, shape, target)}


def paired(phase, shape, a, b, f):
    """f(a's value, b's value) per round, for the rounds both ran."""
    ra, rb = per_round(phase, shape, a, "rps"), per_round(phase, shape, b, "rps")
    return [f(ra[k], rb[k]) for k in sorted(ra) if k in rb]


def cpu_per_call(phase, shape, target):
    sel = [r for r in runs if (r["phase"], r["shape"], r["target"]) == (phase, shape, target)]
    calls = sum(r["calls"] + r["warmup_calls"] for r in sel)
    ticks = sum(r["cpu_ticks"] for r in sel)
    return ticks * TICK_US / calls if calls else float("nan")


phases = uniq(r["phase"] for r in runs)
shapes = uniq(r["shape"] for r in runs)
# Other litgate builds (run.sh VARIANTS) follow litgate, in the order they ran.
VARIANTS = uniq(r["target"] for r in runs if r["target"].startswith("litgate-"))
targets = [t for t in ORDER + VARIANTS if any(r["target"] == t for r in runs)]
proxies = [t for t in PROXIES + VARIANTS if t in targets]
rounds = len(uniq(r["round"] for r in runs))

print(f"- machine: {E['MACHINE']}; load average (1/5/15 min) before {E['LOAD_BEFORE']}, "
      f"after {E['LOAD_AFTER']}")
print(f"- versions: {E['VERSIONS']}")
print(f"- {rounds} rounds x {E['DURATION']} measured per run (after {E['WARMUP']} of warmup); "
      f"targets in rotated order each round; {E['WORKERS']} worker(s) each: nginx "
      f"worker_processes, Envoy --concurrency, litgate [runtime] threads")
tls = uniq(str(r.get("tls")) for r in runs if r["phase"].endswith("/tls"))
if tls:
    print(f"- TLS version between the load generator and each target: {', '.join(tls)}")
checked = sum(r["calls"] + r["warmup_calls"] for r in runs)
print(f"- calls made and checked (body = expected gRPC frame, grpc-status 0): {checked:,}, "
      f"failed: {sum(r['errors'] for r in runs)}")

gen = [r for r in rows if r["kind"] == "gencheck"]
if gen:
    print()
    print(f"Load generator vs h2load, direct to the minimal upstream (h2c), "
          f"{len(uniq(r['round'] for r in gen))} runs each, alternating; median [min..max]:")
    print()
    print("| shape | grpc_load req/s (checks every answer) | h2load req/s (HTTP status only) |")
    print("|---|---:|---:|")
    for shape in uniq(r["shape"] for r in gen):
        g = {tool: [r["rps"] for r in gen if (r["shape"], r["tool"]) == (shape, tool)]
             for tool in ("grpc_load", "h2load")}
        print(f"| {shape} | {span(g['grpc_load'], ',.0f')} | {span(g['h2load'], ',.0f')} |")

for phase in phases:
    up, tr = phase.split("/")
    name = {"minimal": "minimal upstream", "litd": "fake litd (SubServerStatus)"}[up]
    print()
    print(f"### {name}, {'TLS on both hops' if tr == 'tls' else 'h2c on both hops'}")
    print()
    print("| shape | target | req/s | x direct | added µs/call | p50 µs | p99 µs | CPU µs/call |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for shape in shapes:
        for t in targets:
            rps = list(per_round(phase, shape, t, "rps").values())
            if not rps:
                continue
            p50 = med(per_round(phase, shape, t, "p50_us").values())
            p99 = med(per_round(phase, shape, t, "p99_us").values())
            if t == "direct" or "direct" not in targets:
                vs = added = ""
            else:
                vs = span(paired(phase, shape, t, "direct", lambda a, b: a / b), ".2f")
                added = (span(paired(phase, shape, t, "direct", lambda a, b: 1e6 / a - 1e6 / b), ".1f")
                         if shape == "c1m1" else "")
            cpu = f"{cpu_per_call(phase, shape, t):.1f}" if t != "direct" else ""
            print(f"| {shape} | {t} | {span(rps, ',.0f')} | {vs} | {added} | {p50:.0f} | {p99:.0f} | {cpu} |")

if "litgate" in targets and len([p for p in proxies if p not in VARIANTS]) > 1:
    others = [p for p in proxies if p != "litgate" and p not in VARIANTS]
    print()
    print("### litgate against the others, paired per round (req/s ratio, median [min..max])")
    print()
    print("| upstream, transport | shape | " + " | ".join(f"litgate / {o}" for o in others) + " |")
    print("|---|---|" + "---:|" * len(others))
    for phase in phases:
        for shape in shapes:
            cells = [span(paired(phase, shape, "litgate", o, lambda a, b: a / b), ".2f")
                     if paired(phase, shape, "litgate", o, lambda a, b: a / b) else "" for o in others]
            print(f"| {phase} | {shape} | " + " | ".join(cells) + " |")

if "litgate" in targets and VARIANTS:
    print()
    print("### Other litgate builds against litgate, paired per round (req/s ratio, median "
          "[min..max]; CPU µs per call)")
    print()
    print("| upstream, transport | shape | litgate CPU | " + " | ".join(
        f"{v} / litgate | {v} CPU" for v in VARIANTS) + " |")
    print("|---|---|---:|" + "---:|---:|" * len(VARIANTS))
    for phase in phases:
        for shape in shapes:
            cells = [f"{cpu_per_call(phase, shape, 'litgate'):.1f}"]
            for v in VARIANTS:
                ratio = paired(phase, shape, v, "litgate", lambda a, b: a / b)
                cells += [span(ratio, ".2f") if ratio else "", f"{cpu_per_call(phase, shape, v):.1f}"]
            print(f"| {phase} | {shape} | " + " | ".join(cells) + " |")

rss = [r for r in rows if r["kind"] == "rss"]
if rss:
    print()
    print("### Memory: VmRSS after start (idle) / VmHWM at the end of the phase (peak), MiB")
    print()
    print("| upstream, transport | " + " | ".join(proxies) + " |")
    print("|---|" + "---:|" * len(proxies))
    for phase in phases:
        cells = []
        for p in proxies:
            idle = [r for r in rss if (r["phase"], r["target"], r["when"]) == (phase, p, "idle")]
            end = [r for r in rss if (r["phase"], r["target"], r["when"]) == (phase, p, "end")]
            cells.append(f"{idle[0]['rss_kb'] / 1024:.1f} / {end[0]['hwm_kb'] / 1024:.1f}"
                         if idle and end else "")
        print(f"| {phase} | " + " | ".join(cells) + " |")

lg = [r for r in rows if r["kind"] == "litgate"]
if lg:
    print()
    print("litgate_upstream_connections_total at the end of each phase: " + "; ".join(
        f"{r['phase']} {r['upstream_connections']} (for {r['requests']:,} requests)" for r in lg))
