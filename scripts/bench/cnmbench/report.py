"""The results: against peers as a Markdown table (BENCHMARKS.md) and a chart (docs/bench.png); the
collection modes (--modes) as a table on stdout."""
import os
import time

from .system import ROOT, failures, log


def throughput(r):
    wj = r.get("workload_result") or {}
    if "gbit_s" in wj:
        return wj["gbit_s"], "Gbit/s"
    return wj.get("rate"), "/s"


def fmt(v, spec=".1f", unit=""):
    return "–" if v is None else f"{v:{spec}}{unit}"


def share_of(part, whole):
    """`part` of `whole` as a percentage with one decimal, rounded, except that a share short of all
    never prints as 100.0% and one above none never as 0.0%."""
    if part is None or not whole:
        return "–"
    if part == whole:
        return "100.0%"
    if part == 0:
        return "0.0%"
    tenths = min(max(round(1000 * part / whole), 1), 999)
    return f"{tenths // 10}.{tenths % 10}%"


def error_share(v):
    """A byte error: an error too small for two decimals still shows as one."""
    if v is None:
        return "–"
    return "<0.01%" if 0 < v < 0.01 else f"{v:.2f}%"


def mib(v):
    return fmt(v / 1048576 if v is not None else None, ".1f", " MiB")


def instructions_line(ins):
    """The header's line on instructions per closed connection (instructions.measure()), or why there is none."""
    if "instructions_per_closed_connection" not in ins:
        return f"Agent instructions per closed connection: not measured ({ins.get('note', '?')})."
    lo, hi = sorted(ins["ir"], key=int)
    return (f"Agent instructions per closed connection: {ins['instructions_per_closed_connection']:,.0f} (callgrind's"
            f" instruction count of `{ins['binary']} {hi} 1` less that of `{lo} 1`, over {int(hi) - int(lo):,}: the"
            " per-closed-flow path alone, start-up left out, whatever the machine's load).")


def memory_cap_line(r):
    """A run under a memory cap: OOM kills and whether the agent lived, then what the cgroup and the agent saw."""
    m = r["memory_cap"]
    state = "alive" if m.get("alive") else f"dead (exit status {m.get('exit')})"
    parts = [f"OOM kills {fmt(m.get('oom_kill'), 'd')}, {state}"]
    if m.get("oom") is not None:
        parts.append(f"OOM events {m['oom']}")
    parts.append(f"cgroup v{m.get('version', '?')} limit {mib(m.get('limit_bytes'))}, peak {mib(m.get('peak_bytes'))}")
    sm = m.get("status_memory")
    if sm:
        parts.append(f"agent's /status: RSS {mib(sm.get('rss_bytes'))}, limit {mib(sm.get('limit_bytes'))}"
                     f" from {sm.get('limit_source') or 'nowhere'}, budget {mib(sm.get('budget_bytes'))}")
    else:
        parts.append("no /status from the agent")
    if not r["ok"]:
        parts.append(f"run failed: {r.get('error', '?')}")
    return f"- {r['workload']} / {r['collector']}: " + "; ".join(parts)


def report(cfg, results, mach, elapsed, ins):
    base = {r["workload"]: r for r in results if r["collector"] == "none" and r["ok"]}
    lines = [
        "# Benchmarks: cnm-agent against peers",
        "",
        f"Written by `{cfg.command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {elapsed:.0f} s.",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB, Linux {mach['kernel']}, {mach['os']};"
        f" {mach['bpftrace']}; {mach['pmacctd'].split(',')[0]}. Load average before: {' '.join(mach['load_before'])}.",
        instructions_line(ins),
        "",
        "Collector CPU: user + system of the collector's own cgroup (all processes and threads) from the workload's"
        " start until it had reported everything, net of the collector's idle rate (measured over"
        f" {cfg.idle_s:.0f} s just before the workload, after {cfg.settle_s:.0f} s of settling; per-run idle rates in"
        " results.json) (the agent: two reports after the workload; bpftrace, pmacctd: exit,"
        f" final dump included); agent report interval {cfg.interval} s (10 s with more than 20,000 held connections,"
        " so that a report is read before the next replaces it). `% wl` is that CPU as a share of the"
        " workload's own CPU (getrusage); `CPU per 1k conns`, that CPU per 1,000 connections the workload made (`many`:"
        " those held; UDP: the flows of its ground truth). Slowdown: the workload's throughput against the run with no collector (churn"
        " and UDP run at a fixed rate, so their slowdown shows as the workload's CPU growing: `wl CPU +`)."
        " Collector CPU includes the agent answering the harness's reads of its intervals (every 0.5 s)."
        " RSS: steady (VmRSS at the end, for `many` while the connections were held) / peak (VmHWM), all processes."
        " Accuracy: ground truth from the workload (4-tuple and payload bytes each way per connection); `seen` = share of"
        " connections the collector reported, `exact` = share whose bytes both ways are exactly right in every view"
        " reported (the agent and bpftrace report both ends of a loopback connection; both must be right)."
        " pmacctd counts L3 bytes per direction: converted to payload by subtracting 52 B per TCP packet (IP 20 +"
        " TCP 20 + timestamps 12) and 8 B per direction for the SYN options, 28 B per UDP datagram. The bpftrace"
        " program accounts TCP only. Lost: what the collector itself reports (agent /status problems and tracker"
        " counters; pmacctd's libpcap drops; bpftrace's lost events). Byte error: the sum over connections of the"
        " worst view's |reported - true| bytes, as a share of the true bytes (a missed connection counts whole)."
        " A row the agent rolled up (when its memory budget holds no row per connection it merges them: the"
        " ephemeral port 0, `rolled_up` the number merged, their bytes summed) is checked per group, the connections"
        " of one client address to one server address and port: that end's rows of the group summed against the"
        " group's true bytes; as many of its connections are seen as those rows stand for (`rolled_up`, one per"
        " plain row), and exact if the sums are."
        " `agent-intake`: the agent (its default eBPF strategy) also shipping every interval as to Datadog"
        " (`DD_API_KEY`, `DD_PROCESS_CONFIG_PROCESS_DD_URL`) to a stand-in intake on 127.0.0.1 that answers 202;"
        " the requests and bytes it received are in the notes."
        f" `many-50k-capped`: `many-50k` for the agent modes alone, their cgroup limited to {cfg.memory_cap >> 20} MiB"
        " (memory.max, swap off; memory.limit_in_bytes on cgroup v1) before the agent starts, which reads the limit"
        " itself; what came of it (OOM kills, alive or not, the cgroup's peak, the agent's /status memory) follows"
        " the table.",
        "",
        "| workload | collector | collector CPU | CPU per 1k conns | % wl | throughput | slowdown | wl CPU + | RSS steady / peak | seen | exact | byte error | lost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if not r["ok"]:
            lines.append(f"| {r['workload']} | {r['collector']} | failed: {r.get('error', '?')} |" + " |" * 10)
            continue
        b = base.get(r["workload"])
        tp, unit = throughput(r)
        slow = wlp = None
        if b and r["collector"] != "none":
            btp, _ = throughput(b)
            if btp and tp:
                slow = 100.0 * (btp - tp) / btp
            if b.get("workload_cpu_s") and r.get("workload_cpu_s"):
                wlp = 100.0 * (r["workload_cpu_s"] - b["workload_cpu_s"]) / b["workload_cpu_s"]
        cpu = r.get("collector_cpu_s")
        share = 100.0 * cpu / r["workload_cpu_s"] if cpu is not None and r.get("workload_cpu_s") else None
        a = r.get("accuracy") or {}
        rss = f"{fmt(r['rss_kib'] / 1024 if r.get('rss_kib') else None)} / {fmt(r['hwm_kib'] / 1024 if r.get('hwm_kib') else None)} MiB"
        lost = r.get("lost")
        lost_s = "–" if lost is None else (", ".join(f"{k} {v}" for k, v in lost.items()) or "0")
        conns = r.get("connections_made")
        if r["collector"] == "none":
            cpu_s = per_k = share_s = rss = "–"
            seen = exact = err = "–"
        else:
            cpu_s = fmt(cpu * 1000 if cpu is not None else None, ".0f", " ms")
            per_k = fmt(cpu * 1000 * 1000 / conns if cpu is not None and conns else None, ".1f", " ms")
            share_s = fmt(share, ".1f", "%")
            seen = f"{share_of(a.get('seen'), a.get('connections'))} ({a.get('seen')}/{a.get('connections')})"
            exact = f"{share_of(a.get('exact'), a.get('connections'))} ({a.get('exact')})"
            err = error_share(a.get("bytes_abs_error_pct"))
        lines.append(f"| {r['workload']} | {r['collector']} | {cpu_s} | {per_k} | {share_s} | {fmt(tp, '.1f')} {unit} | "
                     f"{fmt(slow, '+.1f', '%')} | {fmt(wlp, '+.1f', '%')} | {rss} | {seen} | {exact} | {err} | {lost_s} |")
    capped = [memory_cap_line(r) for r in results if r.get("memory_cap")]
    if capped:
        lines += ["", "Under the memory cap:", *capped]
    notes = []
    for r in results:
        a = r.get("accuracy") or {}
        rolled = [f"{a['rolled_up']} connections in {a['rolled_rows']} rolled-up rows"] if a.get("rolled_rows") else []
        if r.get("notes") or rolled:
            notes.append(f"- {r['workload']} / {r['collector']}: {'; '.join(rolled + r.get('notes', []))}")
    ran = sorted({f"- {r['collector']}: {r['ran']}" for r in results if r.get("ran")})
    lines += ["", "Agent modes as /status reported them:", *ran]
    if notes:
        lines += ["", "Notes:", *notes]
    if failures:
        lines += ["", "Failures:", *[f"- {f}" for f in failures]]
    lines += ["", f"Workload parameters and raw results: `{os.path.relpath(cfg.out, ROOT)}/results.json`; "
              "per run: collector logs and ground truth under `runs/`.", ""]
    return "\n".join(lines)


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no chart")
        return False
    workloads = list(dict.fromkeys(r["workload"] for r in results))
    collectors = [c for c in dict.fromkeys(r["collector"] for r in results) if c != "none"]
    by = {(r["workload"], r["collector"]): r for r in results if r["ok"]}
    fig, axes = plt.subplots(3, 1, figsize=(12, 11))
    width = 0.8 / max(1, len(collectors))
    metrics = [
        ("collector CPU, % of the workload's CPU (log)", lambda r: 100 * r["collector_cpu_s"] / r["workload_cpu_s"]
         if r.get("collector_cpu_s") is not None and r.get("workload_cpu_s") else None, True),
        ("connections with exact bytes, %", lambda r: (r.get("accuracy") or {}).get("exact_pct"), False),
        ("peak RSS, MiB", lambda r: r["hwm_kib"] / 1024 if r.get("hwm_kib") else None, False),
    ]
    for ax, (title, get, logy) in zip(axes, metrics):
        for i, c in enumerate(collectors):
            xs, ys = [], []
            for j, w in enumerate(workloads):
                r = by.get((w, c))
                v = get(r) if r else None
                if v is not None:
                    xs.append(j + i * width)
                    ys.append(max(v, 1e-3) if logy else v)
            ax.bar(xs, ys, width, label=c)
        ax.set_title(title)
        ax.set_xticks([j + width * (len(collectors) - 1) / 2 for j in range(len(workloads))])
        ax.set_xticklabels(workloads)
        if logy:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def modes_report(h, modes, results):
    """The --modes report: a header, a row per mode, then a line per mode. h: kernel, cores, interval,
    sample, short (n, rate, bytes), bulk_bytes, connections, cgroup (its path or None). results[mode]:
    the figures as strings (missing: not measured) and notes (see modes.Run)."""
    n, rate, size = h["short"]
    lines = [
        "",
        f"cnm-agent collection modes — {h['kernel']}, {h['cores']} cores, interval {h['interval']} s, sample {h['sample']} s;"
        f" short: {n} connections at {rate}/s, {size} B each way; bulk: {h['bulk_bytes']} B; held: {h['connections']} connections",
        "Agent CPU (ms) is net of its idle rate; short: from the workload's start until its TIME_WAIT sockets expired",
        "(a report included); bulk: until two samples after it. CPU read from the agent's own cgroup (ns):"
        f" {h['cgroup'] or 'none, 10 ms clock ticks'}.",
        "BPF (ms) = run time of the agent's cnm_* hook programs, spent inside the workload's system calls (already part of",
        "the workload's CPU); measured with kernel.bpf_stats_enabled=1, which adds its own small cost per run.",
        "",
        "| mode asked → ran | CPU per 1k conns | % of workload | CPU per GiB | % of workload | BPF per 1k conns | BPF per GiB | RSS steady | RSS peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(r, key, unit):
        return f"{r[key]}{unit}" if r.get(key) else "–"

    for m in modes:
        r = results[m]
        lines.append(f"| {m} → {r.get('ran') or '?'} ({r.get('chosen') or '?'}) | {cell(r, 'cpu_k', ' ms')} | {cell(r, 'pct_k', '%')} |"
                     f" {cell(r, 'cpu_g', ' ms')} | {cell(r, 'pct_g', '%')} |"
                     f" {cell(r, 'bpf_k', ' ms')} | {cell(r, 'bpf_g', ' ms')} | {cell(r, 'rss', ' MiB')} | {cell(r, 'hwm', ' MiB')} |")
    lines.append("")
    for m in modes:
        r = results[m]
        notes = f" Notes: {r['notes']}" if r.get("notes") else ""
        lines.append(f"- {m}: {r.get('reason') or 'mode unknown'}. Idle agent CPU {r.get('idle') or '?'} ms/s. {r.get('details', '')}{notes}")
    return lines
