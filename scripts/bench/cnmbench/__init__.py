"""cnm-agent's benchmark harness (scripts/bench/bench.py runs it; so does `python3 -m cnmbench` from scripts/bench).

Modules by concern: system (paths, processes, cgroups, memory), workloads (conn-workload and the
workloads built on it), collectors (the agent and its peers as processes under test), accuracy (what a
collector reported against the ground truth), report (BENCHMARKS.md's table and the chart), peers (the
benchmark against peers), cli (the command line).
"""
