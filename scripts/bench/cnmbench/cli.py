"""cnm-agent's benchmarks, one harness:

  bench.py [--quick] [--publish] [--only-collectors a,b] [--only-workloads a,b] [--out DIR]
      against peers: make bench (--publish: BENCHMARKS.md, docs/bench.png), make bench-quick (--quick)
  bench.py --modes [MODE,...] [--connections N] [--interval S] [--sample S] [--idle-seconds S]
           [--short "N RATE BYTES"] [--bulk-bytes N] [--out DIR]
      what each collection mode costs: make bench-modes
  bench.py --collection [--connections N] [--window-seconds S] [--out DIR]
      CPU per collection and RSS with open connections: make bench-collection

The agent is .build/release/cnm-agent (make release). The knobs of --modes and --collection default to
the environment variables named below, so `CONNECTIONS=5000 make bench-collection` works.
"""
import argparse
import os

from . import collection, modes, peers


# the knobs of --modes and --collection: (flag's dest, environment variable, default); the environment is
# read only for the benchmark that was asked for
KNOBS = {
    "modes": [("connections", "CONNECTIONS", "10000"), ("interval", "INTERVAL", "10"), ("sample", "SAMPLE", "1"),
              ("idle_seconds", "IDLE_SECONDS", "6"), ("short", "SHORT", "10000 5000 100"),
              ("bulk_bytes", "BULK_BYTES", "1073741824")],
    "collection": [("connections", "CONNECTIONS", "10000"), ("window_seconds", "WINDOW_SECONDS", "30")],
}


def mode_list(text):
    return [m for m in text.replace(",", " ").split() if m]


def short_spec(text):
    parts = text.split()
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"want N RATE BYTES, got {text!r}")
    return tuple(int(p) for p in parts)


def sample_spec(text):
    float(text)  # a number of seconds, passed to the agent as given
    return text


def parser():
    sections = "\n".join(m.__doc__.rstrip() + "\n" for m in (peers, modes, collection))
    ap = argparse.ArgumentParser(prog="bench.py", description=__doc__ + "\n" + sections,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--modes", nargs="?", const="", metavar="MODE,...", type=str,
                       help="run the collection modes benchmark, for these modes (default: $MODES, or "
                            f"{','.join(mode_list(modes.DEFAULT_MODES))})")
    which.add_argument("--collection", action="store_true",
                       help="run the collection cost benchmark (CPU per collection, RSS with open connections)")
    g = ap.add_argument_group("against peers (the default)")
    g.add_argument("--quick", action="store_true", help="a small subset with short durations (CI)")
    g.add_argument("--publish", action="store_true", help="copy the results to BENCHMARKS.md and docs/bench.png")
    g.add_argument("--only-collectors", default="")
    g.add_argument("--only-workloads", default="")
    ap.add_argument("--out", help="results directory (default .build/bench, with --quick .build/bench-quick; "
                                  "--modes, --collection: a new /tmp/cnm-bench-modes.* or /tmp/cnm-bench-collection.*)")
    g = ap.add_argument_group("--modes and --collection")
    g.add_argument("--connections", type=int,
                   help="loopback connections held open (CONNECTIONS, default 10000; --modes: 0 skips the memory phase)")
    g = ap.add_argument_group("--modes")
    g.add_argument("--interval", type=int, help="report interval, s (INTERVAL, default 10)")
    g.add_argument("--sample", type=sample_spec, help="sample period, s (SAMPLE, default 1)")
    g.add_argument("--idle-seconds", type=float, help="each idle measurement, s (IDLE_SECONDS, default 6)")
    g.add_argument("--short", type=short_spec, metavar='"N RATE BYTES"',
                   help='the short-connection workload (SHORT, default "10000 5000 100")')
    g.add_argument("--bulk-bytes", type=int, help="bytes over one connection (BULK_BYTES, default 1073741824)")
    g = ap.add_argument_group("--collection")
    g.add_argument("--window-seconds", type=float, help="the measured window, s (WINDOW_SECONDS, default 30)")
    return ap


def knobs(ap, opts, which):
    """Fills the knobs of benchmark which that no flag set from the environment, or their defaults; the
    knobs of the other benchmarks must not be set."""
    mine = {dest for dest, _, _ in KNOBS.get(which, [])}
    for other in KNOBS.values():
        for dest, _, _ in other:
            if dest not in mine and getattr(opts, dest) is not None:
                what = f"--{which}" if which in KNOBS else "the benchmark against peers"
                ap.error(f"--{dest.replace('_', '-')}: not a knob of {what}")
    for dest, var, default in KNOBS.get(which, []):
        if getattr(opts, dest) is not None:
            continue
        action = next(a for a in ap._actions if a.dest == dest)
        text = os.environ.get(var) or default
        try:
            setattr(opts, dest, action.type(text))
        except (ValueError, argparse.ArgumentTypeError) as e:
            ap.error(f"{var}={text!r}: {e}")


def main(argv=None):
    ap = parser()
    opts = ap.parse_args(argv)
    if opts.modes is not None or opts.collection:
        peers_only = [f for f, v in (("--quick", opts.quick), ("--publish", opts.publish),
                                     ("--only-collectors", opts.only_collectors),
                                     ("--only-workloads", opts.only_workloads)) if v]
        if peers_only:
            ap.error(f"{', '.join(peers_only)}: for the benchmark against peers only")
    which = "modes" if opts.modes is not None else "collection" if opts.collection else "peers"
    knobs(ap, opts, which)
    if which == "modes":
        opts.modes = mode_list(opts.modes or os.environ.get("MODES") or modes.DEFAULT_MODES)
        if not opts.modes:
            ap.error("--modes: no mode")
        modes.run(opts)
    elif which == "collection":
        collection.run(opts)
    else:
        peers.run(opts)
