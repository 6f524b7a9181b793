"""Instructions the agent spends per closed connection: callgrind's count of cnm-collection-bench, the agent's
per-closed-flow path run for N closed flows (swift build -c release --product cnm-collection-bench), at two
N and in one run each (its second argument; it makes five by default, for its median CPU time). Only the
run itself is counted (its function, cnm_collection_round), not the making of its records. The
difference of the two counts over the difference of N leaves out start-up and whatever does not grow with
N. An instruction count does not move with the machine's load, as CPU time does."""
import os
import re
import shutil
import subprocess
import tempfile

from .system import ROOT, log

COLLECTION_BENCH = os.path.join(ROOT, ".build", "release", "cnm-collection-bench")
FLOWS = (20000, 40000)


def callgrind_ir(stderr):
    """The total instructions callgrind counted, from what it prints at exit ("Collected : N", or else the
    summary's "I   refs: N,NNN"); None when neither is there."""
    m = re.search(r"^==\d+== Collected : (\d+)\s*$", stderr, re.M)
    if m:
        return int(m.group(1))
    m = re.search(r"^==\d+== I\s+refs:\s+([\d,]+)\s*$", stderr, re.M)
    return int(m.group(1).replace(",", "")) if m else None


def per_closed_connection(ir, flows=FLOWS):
    """(Ir at the larger N - Ir at the smaller) / the difference of N; ir: {N: Ir}."""
    lo, hi = flows
    return (ir[hi] - ir[lo]) / (hi - lo)


def measure(binary=COLLECTION_BENCH, timeout=900):
    """{"instructions_per_closed_connection", "ir": {N: Ir}, "binary"}, or {"note": why it was not measured}
    when the binary or valgrind is missing or a run failed: the benchmark goes on without the figure."""
    if not os.access(binary, os.X_OK):
        return {"note": f"{os.path.relpath(binary, ROOT)} not built: swift build -c release --product"
                        " cnm-collection-bench"}
    if not shutil.which("valgrind"):
        return {"note": "valgrind missing"}
    with tempfile.TemporaryDirectory(prefix="cnm-callgrind.") as d:
        # valgrind 3.19 gives up on the DWARF 5 a Swift release build carries ("possibly corrupted
        # debuginfo"); the count needs none of it, so a copy without it runs
        run = os.path.join(d, os.path.basename(binary))
        if subprocess.run(["objcopy", "--strip-debug", binary, run], capture_output=True).returncode != 0:
            run = binary  # not an ELF objcopy reads, or no objcopy: as it is
        ir = {}
        for n in FLOWS:
            log(f"callgrind: cnm-collection-bench {n}")
            try:
                p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", "--collect-atstart=no",
                                    "--toggle-collect=cnm_collection_round", run, str(n), "1"],
                                   capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return {"note": f"cnm-collection-bench {n} under callgrind: not done within {timeout} s"}
            ir[n] = callgrind_ir(p.stderr)
            if p.returncode != 0 or ir[n] is None or not re.search(rf"^closed flows: {n}$", p.stdout + p.stderr, re.M):
                tail = " / ".join((p.stdout + p.stderr).strip().splitlines()[-3:])
                return {"note": f"cnm-collection-bench {n} under callgrind failed ({p.returncode}): {tail}"}
    return {"instructions_per_closed_connection": per_closed_connection(ir), "ir": ir,
            "binary": os.path.relpath(binary, ROOT)}
