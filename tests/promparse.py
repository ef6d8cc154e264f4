#!/usr/bin/env python3
"""Parses Prometheus text exposition (format 0.0.4) from stdin with the
reference parser, prometheus_client's; exits non-zero if it does not parse.

Prints the number of metric families on success. Used by integration tests
as a second opinion on GET /metrics (the unit tests in src/metrics/tests.rs
carry a stricter checker of their own).

    curl -s localhost:8080/metrics | python3 tests/promparse.py
"""

import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:  # pragma: no cover
    print(f"promparse: prometheus_client is not installed: {e}", file=sys.stderr)
    sys.exit(2)


def main() -> int:
    text = sys.stdin.read()
    if not text.endswith("\n"):
        print("promparse: exposition does not end with a line feed", file=sys.stderr)
        return 1
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends
        print(f"promparse: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    names = [f.name for f in families]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        print(f"promparse: families declared twice: {', '.join(dupes)}", file=sys.stderr)
        return 1
    print(f"{len(families)} families")
    return 0


if __name__ == "__main__":
    sys.exit(main())
