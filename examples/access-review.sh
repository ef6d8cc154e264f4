#!/bin/sh
# The commands both CI examples run in a checkout of the config repository:
# validate it (annotations on the pull request), then write the semantic
# access diff against the merge base with the target branch to
# access-review.md. Usage: access-review.sh <target ref, e.g. origin/main>
# Exit: 0 when the check passes (access changed or not), else non-zero.
set -u
base="${1:?usage: access-review.sh <target ref>}"
rack-gateway check --offline --format github . || exit 1
rack-gateway diff --repo . --format markdown "$base...HEAD" > access-review.md
code=$?
[ "$code" -le 1 ] || exit "$code"
exit 0
