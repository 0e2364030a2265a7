"""Serving on the robot: the fixed-rate daemon loop and what it keeps.

A frame is drained from its socket (:mod:`robot_daemon.zmq_io.receive`) into
:mod:`~robot_daemon.serve.intake` (decoding), waits in :mod:`~robot_daemon.serve.batch`
for its tick, is answered by :mod:`~robot_daemon.serve.daemon` (its forward pass begun
before the deadline by :mod:`~robot_daemon.serve.early`), and is counted in
:mod:`~robot_daemon.serve.report` and :mod:`~robot_daemon.serve.stats`; the frames lost
before it came are told by the gaps in its ``seq`` (:mod:`~robot_daemon.serve.sequence`).
:mod:`~robot_daemon.serve.sockets` opens the daemon's sockets with their limits,
:mod:`~robot_daemon.serve.liveness` tells which sensors fell silent,
:mod:`~robot_daemon.serve.notify` the systemd notifications,
:mod:`~robot_daemon.serve.memory` the memory bound on what libzmq holds,
:mod:`~robot_daemon.serve.reload` the model served (loaded at start, and on SIGHUP in a
thread of its own), :mod:`~robot_daemon.serve.signals` SIGTERM and SIGHUP.
:mod:`~robot_daemon.serve.metrics` builds the Prometheus families from a ``status``,
:mod:`~robot_daemon.serve.exporter` serves them in a process of its own (``robot-daemon
metrics``), and :mod:`~robot_daemon.serve.exporter_child` runs that process for
``run --metrics``. The settings are :mod:`robot_daemon.config`'s.
"""
