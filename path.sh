# shellcheck shell=bash
# Environment for the recipe: source it (`. path.sh`) from any directory.
# Finds the project root from this file's own location, activates the project's virtualenv (.venv, made by
# tools/setup_env.sh) when there is one, and puts the project root on PYTHONPATH.

COSYVOICE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)  # not exported: the scripts find the root themselves

if [ -f "${COSYVOICE_ROOT}/.venv/bin/activate" ] && [ "${VIRTUAL_ENV:-}" != "${COSYVOICE_ROOT}/.venv" ]; then
  # shellcheck disable=SC1091
  . "${COSYVOICE_ROOT}/.venv/bin/activate"
fi

case ":${PYTHONPATH:-}:" in
  *":${COSYVOICE_ROOT}:"*) ;;
  *) export PYTHONPATH="${COSYVOICE_ROOT}${PYTHONPATH:+:${PYTHONPATH}}" ;;
esac
export PYTHONIOENCODING=UTF-8
