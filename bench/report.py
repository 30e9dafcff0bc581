"""Writes docs/benchmarks.md and its charts (docs/bench/*.png, gnuplot) from
the results of bench/run. The prose that explains the numbers lives in
bench/analysis.md and is appended as it is.

    /usr/bin/python3 bench/report.py RESULTS.json    # rewrite the report from saved results
"""
import json
import os
import platform
import shutil
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
SERVERS = ("crewstream", "nchan")

TARGETS = {
    "1": "delivered/s ≥ 3× nchan; p99 ≤ ½ nchan's",
    "2": "delivered/s ≥ 2× nchan; p99 ≤ ½ nchan's",
    "3": "all 10k events/s delivered, p99 ≤ 0.5 ms",
    "4": "≤ 5 KiB per SSE and ≤ 4 KiB per WebSocket connection; 0 CPU while idle",
    "5": "≥ 500,000 events/s acknowledged",
    "6": "50,000 events/s in, everything delivered, p99 ≤ 2 ms",
    "7": "RSS within 10% of the pre-churn baseline; no fd left behind",
}


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1048576:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    osname = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{osname}, Linux {platform.release()}, {os.cpu_count()} × {cpu}, {mem} RAM"


def ms(us):
    return f"{us / 1000:.2f} ms" if us < 100000 else f"{us / 1000:.0f} ms"


def rate(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f} M/s"
    if x >= 1e4:
        return f"{x / 1e3:.0f} k/s"
    return f"{x:.0f}/s"


def ratio(a, b):
    return f"{a / b:.1f}×" if b else "–"


def verdict(ok):
    return "**met**" if ok else "**missed**"


def stream_table(sid, res):
    c, n, fl = res.get("crewstream"), res.get("nchan"), res.get("floor")
    rows = ["| | crewstream | nchan | ratio |" + (" floor |" if fl else ""),
            "|---|---:|---:|---:|" + ("---:|" if fl else "")]

    def row(name, f, fmt, inverse=False, no_ratio=False):
        a = f(c) if c else None
        b = f(n) if n else None
        r = "–"
        if a is not None and b and not no_ratio:
            r = ratio(b, a) + " lower" if inverse else ratio(a, b)
        line = f"| {name} | {fmt(a) if a is not None else '–'} | {fmt(b) if b is not None else '–'} | {r} |"
        if fl:
            z = f(fl)
            line += f" {fmt(z) if z is not None else '–'} |"
        rows.append(line)

    row("delivered events/s", lambda r: r["swarm"]["events_per_s"], rate)
    row("events published (acked)", lambda r: r["pub"]["acked"], lambda x: f"{x:,}")
    row("events lost", lambda r: r["lost"], lambda x: f"{x:,}", no_ratio=True)
    for p in ("p50", "p90", "p99", "max"):
        row(f"latency {p}", lambda r, p=p: r["swarm"]["lat_us"][p], ms, inverse=True)
    if any(r and "runs_p99_us" in r for r in (c, n, fl)):
        row("p99 of each run (median above)", lambda r: r.get("runs_p99_us"),
            lambda x: " / ".join(ms(v) for v in x) if x else "–", no_ratio=True)
    row("server CPU s", lambda r: r["server_cpu_s"], lambda x: f"{x:.2f}", no_ratio=True)
    row("swarm CPU s", lambda r: r["swarm"]["cpu_s"], lambda x: f"{x:.2f}", no_ratio=True)
    row("server RSS connected / peak", lambda r: (r["rss_kib"]["connected"], r["rss_kib"]["peak"]),
        lambda x: f"{x[0] / 1024:.1f} / {x[1] / 1024:.1f} MiB", no_ratio=True)
    row("connect failures", lambda r: r["swarm"]["connect_failures"], str, no_ratio=True)
    met = None
    if c and n:
        cd, nd = c["swarm"]["events_per_s"], n["swarm"]["events_per_s"]
        cp, np_ = c["swarm"]["lat_us"]["p99"], n["swarm"]["lat_us"]["p99"]
        if sid == "1":
            met = cd >= 3 * nd and cp <= np_ / 2
        elif sid == "2":
            met = cd >= 2 * nd and cp <= np_ / 2
    if c:
        if sid == "3":
            met = c["lost"] == 0 and c["swarm"]["lat_us"]["p99"] <= 500 and c["pub"]["acked_per_s"] >= 9900
        elif sid == "6":
            met = c["lost"] == 0 and c["swarm"]["lat_us"]["p99"] <= 2000 and c["pub"]["acked_per_s"] >= 49500
    return rows, met


def idle_table(res):
    rows = ["| | crewstream | nchan |", "|---|---:|---:|"]
    c, n = res.get("crewstream", {}), res.get("nchan", {})
    met = True
    for mode in ("sse", "ws"):
        a, b = c.get(mode), n.get(mode)
        f = lambda m: f"{m['kib_per_conn']:.1f} KiB" if m else "–"
        rows.append(f"| {mode.upper()}: memory per connection | {f(a)} | {f(b)} |")
        g = lambda m: f"{m['idle_cpu_s']:.2f} s over {m['idle_span_s']:.0f} s" if m else "–"
        rows.append(f"| {mode.upper()}: CPU while idle | {g(a)} | {g(b)} |")
        h = lambda m: f"{m['swarm']['established']:,}" if m else "–"
        rows.append(f"| {mode.upper()}: connections up | {h(a)} | {h(b)} |")
        if a:
            met = met and a["kib_per_conn"] <= (5 if mode == "sse" else 4) and a["idle_cpu_s"] <= 0.05
    return rows, (met if c else None)


def ingest_table(res):
    rows = ["| | crewstream | nchan (HTTP POST) | ratio |", "|---|---:|---:|---:|"]
    c, n = res.get("crewstream"), res.get("nchan")
    a = c["pub"]["acked_per_s"] if c else 0
    b = n["pub"]["acked_per_s"] if n else 0
    rows.append(f"| events/s acknowledged | {rate(a)} | {rate(b)} | {ratio(a, b)} |")
    rows.append(f"| server CPU s | {c['server_cpu_s']:.2f} | {n['server_cpu_s']:.2f} | – |" if c and n else
                "| server CPU s | – | – | – |")
    rows.append(f"| publisher CPU s | {c['pub']['cpu_s']:.2f} | {n['pub']['cpu_s']:.2f} | – |" if c and n else
                "| publisher CPU s | – | – | – |")
    rows.append(f"| server RSS peak | {c['rss_kib']['peak'] / 1024:.1f} MiB | {n['rss_kib']['peak'] / 1024:.1f} MiB"
                " | – |" if c and n else "| server RSS peak | – | – | – |")
    return rows, (a >= 500000 if c else None)


def churn_table(res):
    rows = ["| | crewstream | nchan |", "|---|---:|---:|"]
    c, n = res.get("crewstream"), res.get("nchan")

    def f(r, k):
        return f"{r['rss_kib'][k] / 1024:.1f} MiB" if r else "–"

    for k, name in (("before", "RSS before (buffers full)"), ("peak", "RSS peak"), ("after", "RSS after")):
        rows.append(f"| {name} | {f(c, k)} | {f(n, k)} |")

    def d(r):
        return f"{(r['rss_kib']['after'] - r['rss_kib']['before']) / r['rss_kib']['before'] * 100:+.1f}%" if r else "–"

    rows.append(f"| RSS after vs before | {d(c)} | {d(n)} |")
    fd = lambda r: f"{r['fds']['before']} → {r['fds']['after']}" if r and "fds" in r else "–"
    rows.append(f"| open files before → after | {fd(c)} | {fd(n)} |")
    cy = lambda r: f"{r['swarm']['cycles']:,}" if r else "–"
    rows.append(f"| connections made and closed | {cy(c)} | {cy(n)} |")
    cf = lambda r: f"{r['swarm']['connect_failures']:,}" if r else "–"
    rows.append(f"| connect failures | {cf(c)} | {cf(n)} |")
    met = None
    if c:
        met = (c["rss_kib"]["after"] <= c["rss_kib"]["before"] * 1.10 and
               ("fds" not in c or c["fds"]["after"] <= c["fds"]["before"]))
    return rows, met


def chart(path, title, labels, series, ylabels):
    """Two panels side by side, one bar pair (crewstream, nchan) each."""
    if not shutil.which("gnuplot"):
        return False
    dat = path + ".dat"
    with open(dat, "w") as f:
        for i, lab in enumerate(labels):
            f.write(f'"{lab}" ' + " ".join(str(s[i]) for s in series) + "\n")
    script = f"""
set terminal png size 900,360 font ",10"
set output "{path}"
set multiplot layout 1,2 title "{title}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key off
set grid ytics
set yrange [0:*]
"""
    for k, yl in enumerate(ylabels):
        script += f'set ylabel "{yl}"\nplot "{dat}" using {k + 2}:xtic(1) lc rgb "#2a7ab9"\n'
    script += "unset multiplot\n"
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    os.unlink(dat)
    return r.returncode == 0


# The chart of each kind of scenario: what follows "N. name" in its title, one
# function of a server's results per panel, the panels' y labels, and the
# image's alt text after the scenario's name.
CHARTS = {
    "stream": ("", (lambda r: r["swarm"]["events_per_s"], lambda r: r["swarm"]["lat_us"]["p99"] / 1000),
               ("delivered events/s", "p99 latency (ms)"), "delivered rate and p99"),
    "idle": (": KiB per connection", (lambda r: r["sse"]["kib_per_conn"], lambda r: r["ws"]["kib_per_conn"]),
             ("SSE KiB/connection", "WebSocket KiB/connection"), "memory per connection"),
    "ingest": ("", (lambda r: r["pub"]["acked_per_s"], lambda r: r["server_cpu_s"]),
               ("events/s acknowledged", "server CPU s"), "acknowledged rate"),
    "churn": ("", (lambda r: r["rss_kib"]["before"] / 1024, lambda r: r["rss_kib"]["after"] / 1024),
              ("RSS before (MiB)", "RSS after (MiB)"), "memory before and after"),
}


def scenario_chart(charts, sid, sc, res, title_suffix, panels, ylabels, alt):
    """Draws docs/bench/scenarioN.png when both servers have results; returns
    the lines that show it in the report (none when there is no chart)."""
    png = os.path.join(charts, f"scenario{sid}.png")
    if all(s in res for s in SERVERS) and chart(
            png, f"{sid}. {sc['name']}{title_suffix}", list(SERVERS),
            [[f(res[s]) for s in SERVERS] for f in panels], list(ylabels)):
        return ["", f"![{sc['name']}: {alt}](bench/scenario{sid}.png)"]
    return []


def write(results, meta, docs):
    charts = os.path.join(docs, "bench")
    os.makedirs(charts, exist_ok=True)
    out = os.path.join(docs, "benchmarks.md")
    L = ["# Benchmarks: crewstream and nginx + nchan", "",
         "Written by `bench/run` (see [bench/README.md](../bench/README.md)); the prose after the tables is "
         "`bench/analysis.md`. Both servers run on loopback on this machine in the same run, one after the "
         "other for each scenario (the order alternating), the server pinned to core 0 and the load tools "
         "(`bench/swarm`, `bench/publisher`, and the runner itself) to core 1. Latency is publish → receive, "
         "from a monotonic timestamp the publisher puts in each event; the publisher follows its rate in wake-ups "
         "at most 250 µs apart. Scenarios at a steady rate run three times per server, alternating, and the run "
         "with the median p99 is the one shown (every run's p99 beside it): their tail moves from run to run on two cores. "
         "In the steady-rate SSE scenarios (3 and 6) `bench/floor`, a server that only forwards each line to its "
         "subscribers, runs beside them (the floor column): the machine's limit under the same tools. "
         "The raw results are in `docs/bench/results.json`. Timing never gates the test suite.", "",
         f"* machine: {machine()}",
         "* versions: " + "; ".join(f"{k}: {v}" for k, v in meta.get("versions", {}).items()),
         f"* command: `{meta.get('command', 'bench/run')}`, started {meta.get('started', '?')}, "
         f"took {meta.get('seconds', 0) // 60} min {meta.get('seconds', 0) % 60} s", ""]
    summary = ["## Targets", "", "| scenario | target | result |", "|---|---|---|"]
    body = []
    for sid in sorted(results, key=lambda x: int(x) if x.isdigit() else 99):
        sc, res = results[sid]["scenario"], results[sid]["results"]
        body += [f"## {sid}. {sc['name']}", ""]
        desc = {k: sc[k] for k in sc if k not in ("id", "name", "kind")}
        body += ["Parameters: " + ", ".join(f"{k} {v}" for k, v in desc.items()), ""]
        met = None
        if sc["kind"] == "stream":
            rows, met = stream_table(sid, res)
        elif sc["kind"] == "idle":
            rows, met = idle_table(res)
        elif sc["kind"] == "ingest":
            rows, met = ingest_table(res)
        elif sc["kind"] == "churn":
            rows, met = churn_table(res)
        else:
            rows = []
        if sc["kind"] in CHARTS:
            rows += scenario_chart(charts, sid, sc, res, *CHARTS[sc["kind"]])
        body += rows + [""]
        if sid in TARGETS:
            floor = ""
            if sid in ("3", "6") and "floor" in res:
                floor = f" (floor: p99 {ms(res['floor']['swarm']['lat_us']['p99'])})"
            summary.append(f"| {sid}. {sc['name']} | {TARGETS[sid]} | "
                           f"{'–' if met is None else verdict(met)}{floor} |")
    L += summary + ["", "Details and the reasons below.", ""] + body
    try:
        with open(os.path.join(BENCH, "analysis.md")) as f:
            L += [f.read().rstrip(), ""]
    except OSError:
        pass
    with open(out, "w") as f:
        f.write("\n".join(L))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        res = json.load(f)
    meta = res.pop("meta", None) or {"command": "bench/report.py " + sys.argv[1]}
    print(write(res, meta, os.path.join(os.path.dirname(BENCH), "docs")))
