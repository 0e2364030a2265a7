"""The command line loads Dask and pyarrow only for the fleet jobs."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_cli_imports_neither_dask_nor_pyarrow() -> None:
    code = ("import sys, robot_daemon.cli, robot_daemon.serve.daemon;"
            " print(sorted({m.split('.')[0] for m in sys.modules} & {'dask', 'distributed',"
            " 'pyarrow'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"
