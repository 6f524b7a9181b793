#!/usr/bin/env python3
"""cnm-agent's benchmark harness: `bench.py --help` says what it measures. The code is in cnmbench/."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cnmbench.cli import main  # noqa: E402 -- the package is found through the path set above
from cnmbench.system import cleanup  # noqa: E402

if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
