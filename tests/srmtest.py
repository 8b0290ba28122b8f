"""srmtest.py -- what the Python tests under tests/cpu share: the repository root, the build and
binary folders from BUILD / BIN (relative to the root unless absolute), and the tally of checks
that ends in the "N passed, N failed" line tests/run.sh sums. A test does
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from srmtest import ROOT, BUILD, BIN, check, failures, summary
and ends with `return summary()` (the exit status: 1 when a check failed). A test that logs every
check, passed ones too, imports check_ok and calls it instead of check.
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))    # join keeps an absolute path
BIN = os.path.join(ROOT, os.environ.get("BIN", "bin"))

_passed = _failed = 0


def check(cond, what):
    """Count one check; a failure is printed with what it checked."""
    global _passed, _failed
    if cond:
        _passed += 1
    else:
        _failed += 1
        print("FAIL", what, flush=True)


def check_ok(cond, what, detail=""):
    """check() for tests that log every check: a pass prints "ok   WHAT", a failure "FAIL WHAT
    DETAIL" (detail, when given, only matters on failure)."""
    if cond:
        print("ok  ", what, flush=True)
    check(cond, what + (" " + detail if detail else ""))


def failures():
    return _failed


def summary():
    """Print the tally line and return the exit status."""
    print("%d passed, %d failed" % (_passed, _failed))
    return 1 if _failed else 0
