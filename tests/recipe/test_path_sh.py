"""path.sh finds the project from its own location, whatever the current directory."""
from __future__ import annotations

import os
import subprocess

from recipe_helpers import ROOT


def test_path_sh_from_another_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COSYVOICE_ROOT")}
    script = (f'set -euo pipefail; . "{ROOT}/path.sh"; . "{ROOT}/path.sh"; echo "$COSYVOICE_ROOT"; echo "$PYTHONPATH"; '
              'python3 -c "import cosyvoice, os; print(os.path.dirname(os.path.dirname(cosyvoice.__file__)))"')
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    root, pythonpath, package_parent = r.stdout.splitlines()
    assert root == str(ROOT)
    assert pythonpath == str(ROOT)  # sourcing twice adds it once
    assert package_parent == str(ROOT)
