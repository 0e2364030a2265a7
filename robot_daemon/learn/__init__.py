"""Online learning while serving: labelled frames in, guarded SGD, checkpoints out.

:mod:`~robot_daemon.learn.session` runs it inside the daemon (the label socket, when a
step fits between ticks), :mod:`~robot_daemon.learn.learner` is the guarded step itself,
:mod:`~robot_daemon.learn.checkpoints` the atomic checkpoint store and
:mod:`~robot_daemon.learn.keys` the CurveZMQ keys of the label channel.
"""
