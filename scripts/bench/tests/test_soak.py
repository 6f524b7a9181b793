"""The soak's verdict arithmetic (scripts/soak.py): the robust slope of the floors and the fd kinds."""
import importlib.util
import os
import tempfile
import unittest

from cnmbench import system

_spec = importlib.util.spec_from_file_location("soak", os.path.join(system.ROOT, "scripts", "soak.py"))
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)


class RobustSlope(unittest.TestCase):
    def test_a_steady_growth_is_measured_per_hour(self):
        points = [(m, 45 + m / 30) for m in range(10, 31)]  # 2 MiB/h
        self.assertAlmostEqual(soak.robust_slope_per_hour(points), 2.0)

    def test_one_odd_minute_does_not_move_it_but_moves_least_squares(self):
        points = [(m, 74.5) for m in range(10, 31)]
        points[13] = (23, 89.4)
        self.assertEqual(soak.robust_slope_per_hour(points), 0.0)
        self.assertGreater(soak.slope_per_hour(points)[0], 1.0)

    def test_a_leak_behind_noise_still_fails(self):
        # +3 MiB/h under a sawtooth of ±5 MiB: the median of the pairwise slopes still sees it.
        points = [(m, 100 + m / 20 + (5 if m % 2 else -5)) for m in range(10, 71)]
        self.assertGreater(soak.robust_slope_per_hour(points), 1.0)

    def test_fewer_than_two_minutes_is_no_slope(self):
        self.assertEqual(soak.robust_slope_per_hour([(10, 1.0)]), 0.0)


class FdKinds(unittest.TestCase):
    def test_sockets_pipes_and_paths_are_grouped(self):
        with tempfile.TemporaryDirectory() as d:
            for name, target in [("3", "socket:[123]"), ("4", "socket:[456]"), ("5", "pipe:[7]"),
                                 ("6", "anon_inode:[eventpoll]"), ("7", "/proc/1234/net/tcp"), ("8", "/dev/null")]:
                os.symlink(target, os.path.join(d, name))
            self.assertEqual(soak.fd_kinds(d), {"socket": 2, "pipe": 1, "anon_inode:[eventpoll]": 1,
                                                "/proc/1234": 1, "/dev/null": 1})


if __name__ == "__main__":
    unittest.main()
