"""cnm-agent's benchmark harness (scripts/bench/bench.py runs it; so does `python3 -m cnmbench` from scripts/bench).

Modules by concern: system (paths, processes, cgroups, memory), workloads (conn-workload and the
workloads built on it), collectors (the agent and its peers as processes under test), accuracy (what a
collector reported against the ground truth), report (BENCHMARKS.md's table, the chart and the modes
table), instructions (callgrind's instructions per closed connection), and one module per benchmark: peers
(against peers), modes (what each collection mode costs), collection (CPU per collection and RSS with open
connections); cli (the command line).
"""
