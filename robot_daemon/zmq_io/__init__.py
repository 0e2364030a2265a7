"""Reading ZeroMQ subscriptions: what serving, online learning and the tools share.

:mod:`~robot_daemon.zmq_io.receive` drains a socket's messages between ticks without
letting a flood run past a deadline, and bounds what is held of a message;
:mod:`~robot_daemon.zmq_io.monitor` notices the connections libzmq gave up on and
connects them again. The daemon's frame sockets (:mod:`robot_daemon.serve`), its label
socket (:mod:`robot_daemon.learn.session`), ``watch`` and the demo all read through them.
"""
