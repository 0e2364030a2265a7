"""``python -m robot_daemon``: the same entry point as the ``robot-daemon`` script."""

from __future__ import annotations

import sys

from robot_daemon.cli import main

sys.exit(main())
