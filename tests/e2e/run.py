#!/usr/bin/env python3
"""Runs every end-to-end test (tests/e2e/test_*.py) with unittest.

  PIPELINED=build/daemon/pipelined PIPELINECTL=build/client/pipelinectl \\
      python3 tests/e2e/run.py [-k PATTERN] [-v]

The last line printed is "N passed, N failed" (plus ", N skipped" if any were
skipped, ", N expected failures (known bugs)" for tests marked known_bug
that still fail as expected; those count neither as passed nor as failed). A test counts once
whatever its subtests do: it failed if any subtest failed or errored, or if
it was an expected failure that unexpectedly passed (remove the marker).
Exit status 0 only if none failed.
"""

import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


class CountingResult(unittest.TextTestResult):
    """Counts tests, not failure records: one test with three failing subtests
    is one failed test; an error in a class fixture fails that class."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []
        self.outcome = {}

    def _mark(self, test, outcome):
        key = test.id()
        if key not in self.outcome:
            self.seen.append(key)
        if outcome == "failed" or key not in self.outcome:
            self.outcome[key] = outcome

    def startTest(self, test):
        super().startTest(test)
        self.started = time.monotonic()
        self._mark(test, "passed")

    def stopTest(self, test):
        super().stopTest(test)
        if self.showAll:
            self.stream.writeln("    (%.2f s)" % (time.monotonic() - self.started))

    def addError(self, test, err):
        super().addError(test, err)
        self._mark(test, "failed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._mark(test, "failed")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._mark(test, "failed")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if self.outcome.get(test.id()) != "failed":
            self.outcome[test.id()] = "skipped"

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.outcome[test.id()] = "expected failure"

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._mark(test, "failed")


def main():
    ap = argparse.ArgumentParser(description="run the pipelined end-to-end tests")
    ap.add_argument("-k", dest="patterns", action="append",
                    help="only tests whose name contains this (may repeat)")
    ap.add_argument("-q", "--quiet", action="store_true", help="less output")
    args = ap.parse_args()

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = ["*%s*" % p for p in args.patterns]
    suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)

    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=1 if args.quiet else 2,
                                     resultclass=CountingResult)
    start = time.monotonic()
    result = runner.run(suite)
    counts = {"passed": 0, "failed": 0, "skipped": 0, "expected failure": 0}
    for key in result.seen:
        counts[result.outcome[key]] += 1
    # Errors outside any test (e.g. a module that does not import).
    for test, _ in result.errors:
        test = getattr(test, "test_case", test)  # a subtest counts in its test
        if test.id() not in result.outcome:
            counts["failed"] += 1
    line = "%d passed, %d failed" % (counts["passed"], counts["failed"])
    if counts["skipped"]:
        line += ", %d skipped" % counts["skipped"]
    if counts["expected failure"]:
        line += ", %d expected failures (known bugs)" % counts["expected failure"]
    print("e2e: %.1f s" % (time.monotonic() - start))
    print(line)
    sys.exit(1 if counts["failed"] else 0)


if __name__ == "__main__":
    main()
