#!/usr/bin/env python3
"""Checks the target graph's rules (reads `swift package describe --type json` on stdin):
the pure centre imports nothing of the system, and the outputs link no C library of a collector.
Exits 1 naming each broken rule."""
import json
import sys

# Targets that must not reach these, directly or through their dependencies.
FORBIDDEN = {
    "CNMModel": {"CLinux", "CBPF", "CCurl", "CZstd"},
    "CNMPacket": {"CLinux", "CBPF", "CCurl", "CZstd"},
    "CNMReport": {"CLinux", "CBPF", "CCurl", "CZstd", "CNMCollector"},
    "CNMServer": {"CBPF", "CCurl", "CZstd", "CNMCollector", "CNMBPF", "CNMNetlink"},
    "CNMServerTests": {"CBPF", "CCurl", "CZstd", "CNMCollector"},
    "CNMBPF": {"CNMNetlink", "CCurl"},
}

targets = {t["name"]: t for t in json.load(sys.stdin)["targets"]}


def closure(name, seen):
    for dep in targets[name].get("target_dependencies", []):
        if dep not in seen:
            seen.add(dep)
            closure(dep, seen)
    return seen


broken = []
for name, forbidden in FORBIDDEN.items():
    if name not in targets:
        broken.append(f"{name}: no such target")
        continue
    reached = closure(name, set()) & forbidden
    if reached:
        broken.append(f"{name} reaches {', '.join(sorted(reached))}")
for line in broken:
    print(f"check-targets: {line}", file=sys.stderr)
sys.exit(1 if broken else 0)
