#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv) so the recipe and the tests can run.
#
# A torch that the chosen python already imports is reused: the venv then sees that python's packages
# (--system-site-packages) and a constraints file pins torch to the found version so nothing upgrades it.
# Otherwise `--torch` (default torch==2.13.0, the tested version) is installed; pip picks the build for this
# machine (the normal PyPI build, which on Linux x86_64 is the CUDA one). Then requirements.txt and the package
# itself (`pip install -e .`). A stamp keyed by requirements.txt, pyproject.toml and this script makes reruns instant.
set -euo pipefail

python=python3        # interpreter the venv is made from (Python >= 3.10 with venv and pip)
torch="torch==2.13.0" # torch requirement installed when that python cannot import torch
dry_run=false         # true: only print what would be done
force=false           # true: redo the setup even if the stamp is current

help_message="Usage: $0 [options]
Create or refresh the project's virtualenv (.venv).
  --python EXE      interpreter a new venv is made from (default: ${python}; delete .venv to switch)
  --torch SPEC      torch requirement installed when that python cannot import torch (default: ${torch})
  --dry_run BOOL    only print the plan (default: ${dry_run})
  --force BOOL      redo the setup even if it is up to date (default: ${force})"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "${root}/tools/parse_options.sh"
[ $# -eq 0 ] || { echo "setup_env.sh: unexpected argument '$1'" >&2; exit 2; }

venv=${root}/.venv
stamp=${venv}/.setup_stamp
say() { echo "setup_env: $*"; }
die() { echo "setup_env: error: $*" >&2; exit 2; }

key=$(cat "${root}/requirements.txt" "${root}/pyproject.toml" "${root}/tools/setup_env.sh" | sha256sum | cut -d' ' -f1)
if [ "${force}" = false ] && [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${key}" ] \
  && "${venv}/bin/python" -c '' 2>/dev/null; then
  say "${venv} is up to date"
  exit 0
fi

# The interpreter that owns the packages: the existing venv when there is one, else --python.
if [ -x "${venv}/bin/python" ] && "${venv}/bin/python" -c '' 2>/dev/null; then
  base=${venv}/bin/python
  have_venv=true
else
  command -v "${python}" >/dev/null || die "'${python}' not found: install Python >= 3.10 with pip and venv, or pass --python"
  base=${python}
  have_venv=false
fi
"${base}" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$("${base}" -V 2>&1) is too old: Python >= 3.10 is needed (pass --python)"
found_torch=$("${base}" -c 'import torch; print(torch.__version__)' 2>/dev/null) || found_torch=""

if [ -n "${found_torch}" ]; then
  plan="reuse torch ${found_torch} from ${base}"
else
  plan="install ${torch}"
fi
if [ "${have_venv}" = true ]; then
  say "updating ${venv}: ${plan}"
else
  say "creating ${venv} from ${base} ($("${base}" -V 2>&1)): ${plan}"
fi
[ "${dry_run}" = false ] || exit 0

if [ "${have_venv}" = false ]; then
  rm -rf "${venv}"
  if [ -n "${found_torch}" ]; then
    "${base}" -m venv --system-site-packages "${venv}" \
      || die "'${base} -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
    # A torch living in another virtualenv is not a system site package: point the new venv at it.
    if ! "${venv}/bin/python" -c 'import torch' 2>/dev/null; then
      torch_site=$("${base}" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
      site=$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
      echo "${torch_site}" > "${site}/_reuse_torch.pth"
      "${venv}/bin/python" -c 'import torch' || die "the new venv cannot import torch from ${torch_site}"
    fi
  else
    "${base}" -m venv "${venv}" || die "'${base} -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
  fi
fi

vpy=${venv}/bin/python
constraints=${venv}/constraints.txt
if [ -n "${found_torch}" ]; then
  echo "torch==${found_torch%%+*}" > "${constraints}"
  extra=()
else
  echo "${torch}" > "${constraints}"
  extra=("${torch}")
fi
# PIP_CONSTRAINT also reaches the build environments of source packages, so none of them pulls another torch.
export PIP_CONSTRAINT=${constraints}
# DeepSpeed builds no C++/CUDA op at install time (it compiles what it needs on first use)
export DS_BUILD_OPS=0
"${vpy}" -m pip install -q "${extra[@]}" -r "${root}/requirements.txt"
"${vpy}" -m pip install -q --no-deps -e "${root}"
installed=$("${vpy}" -c 'import torch; print(torch.__version__)')
echo "torch==${installed%%+*}" > "${constraints}"
echo "${key}" > "${stamp}"
say "ready: ${venv} (python $("${vpy}" -c 'import platform; print(platform.python_version())'), torch ${installed})"
