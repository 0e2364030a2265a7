"""The command line loads Dask and pyarrow only for the fleet jobs."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_and_the_robots_runtime_import_neither_dask_nor_pyarrow() -> None:
    code = ("import sys, robot_daemon.cli, robot_daemon.serve.daemon, robot_daemon.learn.session,"
            " robot_daemon.wire, robot_daemon.nn, robot_daemon.model;"
            " print(sorted({m.split('.')[0] for m in sys.modules} & {'dask', 'distributed',"
            " 'pyarrow'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"
