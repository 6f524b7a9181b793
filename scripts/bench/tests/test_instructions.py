"""Instructions per closed connection: callgrind's output read, and the figure from two runs."""
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

from cnmbench import instructions

# the end of what callgrind writes to stderr with --callgrind-out-file=/dev/null
STDERR = """==6453== Callgrind, a call-graph generating cache profiler
==6453== Command: cnm-collection-bench 20000
==6453== 
==6453== Events    : Ir
==6453== Collected : 126651
==6453== 
==6453== I   refs:      126,651
"""


class Callgrind(unittest.TestCase):
    def test_total_from_collected(self):
        self.assertEqual(instructions.callgrind_ir(STDERR), 126651)

    def test_total_from_the_summary_alone(self):
        self.assertEqual(instructions.callgrind_ir("==7== I   refs:      1,234,567,890\n"), 1234567890)

    def test_no_total(self):
        self.assertIsNone(instructions.callgrind_ir("closed flows: 20000\n==7== Events    : Ir\n"))

    def test_per_closed_connection_leaves_out_what_does_not_grow(self):
        self.assertEqual(instructions.per_closed_connection({20000: 50_000_000 + 20000 * 900,
                                                             40000: 50_000_000 + 40000 * 900}), 900.0)

    def test_a_missing_binary_is_a_note(self):
        r = instructions.measure("/nonexistent/cnm-collection-bench")
        self.assertEqual(list(r), ["note"])
        self.assertIn("not built", r["note"])

    @unittest.skipUnless(shutil.which("valgrind") and shutil.which("gcc"), "valgrind or gcc missing")
    def test_a_loop_of_known_cost(self):
        # a stand-in whose measured run costs one call of a few instructions per "closed flow", after
        # making its input at ten times that cost per flow, which must not be counted
        with tempfile.TemporaryDirectory() as d:
            src, exe = os.path.join(d, "bench.c"), os.path.join(d, "cnm-collection-bench")
            with open(src, "w") as f:
                f.write("#include <stdio.h>\n#include <stdlib.h>\n"
                        "__attribute__((noinline)) static unsigned long step(unsigned long x) {"
                        " __asm__ volatile(\"\" : \"+r\"(x)); return x * 3 + 1; }\n"
                        "__attribute__((noinline)) unsigned long cnm_collection_round(long n, unsigned long x) {"
                        " for (long i = 0; i < n; i++) x = step(x); return x; }\n"
                        "int main(int argc, char **argv) { long n = atol(argv[1]); unsigned long x = 0;"
                        " for (long i = 0; i < 10 * n; i++) x = step(x);"
                        " x = cnm_collection_round(n, x);"
                        " printf(\"closed flows: %ld\\n\", n); return (int)(x & 0); }\n")
            subprocess.run(["gcc", "-O1", "-g", "-o", exe, src], check=True)
            r = instructions.measure(exe, timeout=120)
            self.assertGreater(r["instructions_per_closed_connection"], 3, r)
            self.assertLess(r["instructions_per_closed_connection"], 20, r)

    @unittest.skipUnless(shutil.which("valgrind"), "valgrind missing")
    def test_under_callgrind(self):
        with tempfile.TemporaryDirectory() as d:
            fake = os.path.join(d, "cnm-collection-bench")
            with open(fake, "w") as f:
                f.write('#!/bin/sh\necho "closed flows: $1"\n')
            os.chmod(fake, stat.S_IRWXU)
            r = instructions.measure(fake, timeout=120)
            self.assertEqual(sorted(r["ir"]), [20000, 40000], r)
            self.assertIsInstance(r["instructions_per_closed_connection"], float)
            with open(fake, "w") as f:
                f.write("#!/bin/sh\necho wrong\n")
            self.assertIn("failed", instructions.measure(fake, timeout=120)["note"])


if __name__ == "__main__":
    unittest.main()
