"""Shared by the benchmark scripts: rerun the calling script inside its own venv.

Each benchmark installs its peer (Pillow, torch, NumPy, ...) from PyPI into a venv
under bench/ so that a fresh machine needs nothing but python3.
"""

import os
import subprocess
import sys
import venv
from pathlib import Path


def reexec_in_venv(default_dir: Path, probe_modules, requirements, script: str):
    """Re-execute `script` with the python of a venv that imports `probe_modules`,
    creating the venv and pip-installing `requirements` when needed.
    `GANTRY_BENCH_VENV` overrides the venv folder."""
    venv_dir = Path(os.environ.get("GANTRY_BENCH_VENV", default_dir)).resolve()
    python = venv_dir / "bin" / "python"
    if Path(sys.prefix).resolve() == venv_dir:
        return
    if not python.exists():
        print(f"creating {venv_dir}", file=sys.stderr)
        venv.create(venv_dir, with_pip=True)
    probe = [str(python), "-c", "import " + ", ".join(probe_modules)]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        pip = [str(python), "-m", "pip", "install", "--quiet", *requirements]
        subprocess.run(pip, check=True)
    os.execv(str(python), [str(python), str(Path(script).resolve()), *sys.argv[1:]])
