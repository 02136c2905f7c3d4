#!/usr/bin/env bash
# Run the test suite: sets up .venv on first use (tools/setup_env.sh), then pytest.
# Arguments are passed to pytest, e.g. `bash tools/run_tests.sh tests/recipe -x`.
# Exits non-zero when a test fails or when no test was collected (pytest's exit code 5).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "${root}/tools/setup_env.sh"
. "${root}/path.sh"
cd "${root}"

[ $# -gt 0 ] || set -- tests
rc=0
python -m pytest -q -p no:cacheprovider "$@" || rc=$?
if [ "${rc}" -eq 5 ]; then
  echo "run_tests.sh: pytest collected no tests; that counts as a failure" >&2
  exit 1
fi
exit "${rc}"
