"""A command adapter for tests/test_verify.py: refsim itself behind the JSON protocol of
spec/verify.md (one request on stdin, one result on stdout)."""

import sys

from refsim.verify import RefsimAdapter, serve

if __name__ == "__main__":
    serve(RefsimAdapter(), sys.stdin, sys.stdout)
