"""A line-mode command adapter for tests/test_verify.py (``refsim verify --command ... --lines``):
refsim itself behind the JSON protocol of spec/verify.md, one request per line on stdin, one
answer per line on stdout, until the end of stdin."""

import sys

from refsim.verify import RefsimAdapter, serve

if __name__ == "__main__":
    serve(RefsimAdapter(), sys.stdin, sys.stdout, lines=True)
