"""Where the partitions of a fleet job run, and the progress line while they do.

:func:`open_runner` gives a :class:`Runner` for ``--workers N`` / ``--scheduler
ADDRESS``: :class:`InProcess` for one worker (Dask is not imported), else a
:class:`DaskRunner` on a ``LocalCluster`` started for the job or on a running scheduler.
Tasks are module-level functions that pickle, their keys name the bag or file they read,
and :class:`Progress` draws the progress line.

Design: docs/architecture.md, "Where fleet jobs run".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, Protocol, TypeVar

from robot_daemon.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")

#: Seconds between progress lines when stderr is not a terminal.
PROGRESS_EVERY_S = 5.0
#: Partitions a runner keeps in flight per worker in :meth:`Runner.map_ordered`.
LOOKAHEAD_PER_WORKER = 2
#: Seconds a ``--scheduler`` has to accept the connection and answer as Dask does.
CONNECT_TIMEOUT_S = 10.0
#: The longest bag path a task key shows (its end, where the name is).
KEY_PATH_CHARS = 120


def partition_name(item: Any) -> str:
    """The bag or file a task's item stands for: a :class:`~.sources.Source`'s ``path``,
    a replay job's ``bag``, the first member of ``(path, index)``; else its type."""
    for attribute in ("path", "bag"):
        value = getattr(item, attribute, None)
        if isinstance(value, str):
            return value
    if isinstance(item, tuple) and item and isinstance(item[0], str):
        return item[0]
    return type(item).__name__


def task_key(fn: Callable[..., Any], i: int, item: Any, token: str) -> str:
    """``write_indexed-00003-runs/run7.mcap-<token>``: the Dask key of the task that runs
    ``fn`` on ``item``, the ``i``-th of a map. Dask's dashboard groups tasks by the words
    before the number (the function); the token keeps keys unique when a map is run again
    (an epoch of ``train``)."""
    name = partition_name(item)
    if len(name) > KEY_PATH_CHARS:
        name = "..." + name[-KEY_PATH_CHARS:]
    return f"{fn.__name__}-{i:05d}-{name}-{token}"


class Progress:
    """``fleet: 3/20 partitions, 152,000 frames, 48,000 frames/s`` on stderr.

    On a terminal the line is rewritten in place; elsewhere (a log) a line is printed
    at most every :data:`PROGRESS_EVERY_S` seconds, and always at the end.
    """

    def __init__(self, job: str, total: int, stream: IO[str] | None = None) -> None:
        self.job, self.total = job, total
        self.done = self.frames = 0
        self.stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.monotonic()
        self._last = -PROGRESS_EVERY_S

    def add(self, frames: int) -> None:
        """One more partition done, holding ``frames`` frames."""
        self.done += 1
        self.frames += frames
        now = time.monotonic()
        if self._tty or now - self._last >= PROGRESS_EVERY_S or self.done == self.total:
            self._last = now
            end = "\n" if not self._tty or self.done == self.total else ""
            print(("\r" if self._tty else "") + self.line(), end=end, file=self.stream,
                  flush=True)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        return (f"{self.job}: {self.done}/{self.total} partitions, {self.frames:,} frames,"
                f" {self.frames / elapsed:,.0f} frames/s")

    @property
    def frames_per_s(self) -> float:
        return self.frames / max(time.monotonic() - self._start, 1e-9)


class Runner(Protocol):
    """Runs one function over many partitions."""

    workers: int

    def map_unordered(
        self, fn: Callable[..., R], items: Sequence[Any], **kwargs: Any
    ) -> Iterator[tuple[int, R]]:
        """``(i, fn(items[i], **kwargs))`` for every i, in the order they finish."""
        ...

    def map_ordered(
        self, fn: Callable[..., R], items: Sequence[Any], **kwargs: Any
    ) -> Iterator[R]:
        """``fn(items[i], **kwargs)`` in the order of ``items``, a few partitions ahead."""
        ...


class InProcess:
    """Every partition in this process, in order (``--workers 1``)."""

    workers = 1

    def map_unordered(
        self, fn: Callable[..., R], items: Sequence[Any], **kwargs: Any
    ) -> Iterator[tuple[int, R]]:
        for i, item in enumerate(items):
            yield i, fn(item, **kwargs)

    def map_ordered(
        self, fn: Callable[..., R], items: Sequence[Any], **kwargs: Any
    ) -> Iterator[R]:
        for item in items:
            yield fn(item, **kwargs)


class DaskRunner:
    """Partitions as tasks of a ``distributed.Client`` (one task per partition)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        found = len(client.scheduler_info(n_workers=-1)["workers"])
        self.has_workers = found > 0
        self.workers = max(1, found)

    def map_unordered(
        self, fn: Callable[..., R], items: Sequence[Any], **kwargs: Any
    ) -> Iterator[tuple[int, R]]:
        from distributed import as_completed

        token = uuid.uuid4().hex
        futures = [self.client.submit(fn, item, key=task_key(fn, i, item, token), **kwargs)
                   for i, item in enumerate(items)]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                result = future.result()
                yield index[future.key], result
                future.release()  # the worker may forget it now
        finally:
            for future in futures:
                future.cancel()

    def map_ordered(
        self, fn: Callable[..., R], items: Sequence[Any], **kwargs: Any
    ) -> Iterator[R]:
        ahead = LOOKAHEAD_PER_WORKER * self.workers
        token = uuid.uuid4().hex
        pending: list[Any] = []
        try:
            for i in range(len(items)):
                while len(pending) < ahead and i + len(pending) < len(items):
                    j = i + len(pending)
                    pending.append(self.client.submit(
                        fn, items[j], key=task_key(fn, j, items[j], token), **kwargs))
                future = pending.pop(0)
                yield future.result()
                future.release()
        finally:
            for future in pending:
                future.cancel()


@contextlib.contextmanager
def open_runner(
    workers: int = 1, scheduler: str | None = None, *,
    connect_timeout_s: float | None = None, warn: Callable[[str], None] | None = None,
) -> Iterator[Runner]:
    """The runner for ``--workers``/``--scheduler``; a cluster it starts, it stops.

    ``connect_timeout_s`` defaults to :data:`CONNECT_TIMEOUT_S`; ``warn`` is told of a
    scheduler without workers (the job then waits for them).

    Raises:
        ConfigError: ``workers`` below 1, or a ``scheduler`` that is not ``tcp://HOST:PORT``
            or does not answer as a Dask scheduler within ``connect_timeout_s``.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if scheduler is None and workers == 1:
        yield InProcess()
        return
    if scheduler is not None:
        check_scheduler(scheduler)
    client_cls, cluster_cls = _dask()
    if scheduler is not None:
        timeout_s = CONNECT_TIMEOUT_S if connect_timeout_s is None else connect_timeout_s
        with _connect(client_cls, scheduler, timeout_s) as client:
            runner = DaskRunner(client)
            if not runner.has_workers and warn is not None:
                warn(f"the Dask scheduler at {scheduler} has no workers yet; the job waits"
                     f" for them (start some with `dask worker {scheduler}`)")
            yield runner
        return
    # Worker warnings (a task cancelled as a failed job stops) are noise on the user's
    # terminal; what a job must report comes back in its results and its one error line.
    # No dashboard: nobody is told its port, and it lives only as long as the job (and
    # without bokeh Dask would serve a page saying it needs bokeh). The scheduler's HTTP
    # server runs even so, on 8787 unless told otherwise: a free loopback port, not a
    # warning when a `dask scheduler` holds 8787.
    with _workers_ignore_ctrl_c():
        cluster = cluster_cls(n_workers=workers, threads_per_worker=1, processes=True,
                              host="127.0.0.1", dashboard_address="127.0.0.1:0",
                              scheduler_kwargs={"dashboard": False},
                              silence_logs=logging.ERROR)
    with cluster, client_cls(cluster) as client:
        yield DaskRunner(client)


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """SIGINT ignored while the worker processes start, so that they inherit it ignored:
    Ctrl-C reaches the terminal's whole process group, and each worker printed a
    KeyboardInterrupt traceback while this process was stopping the cluster anyway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_scheduler(address: str) -> None:
    """Raise a ConfigError that shows the right form unless ``address`` is
    ``tcp://HOST:PORT``, the form ``dask scheduler`` prints. (Dask itself also takes
    ``HOST:PORT``, ``tls://``, ``inproc://`` and more, and answers the mistakes among
    them with tracebacks.)"""
    problem = _address_problem(address)
    if problem:
        raise ConfigError(f"--scheduler {address!r}: {problem}; give the address `dask"
                          " scheduler` prints, tcp://HOST:PORT (such as tcp://10.0.0.5:8786)")


def _address_problem(address: str) -> str | None:
    """What is wrong with a scheduler address, or ``None``."""
    parts = urllib.parse.urlsplit(address)
    if parts.scheme != "tcp" or not parts.netloc:
        return "not a tcp:// address"
    try:
        port = parts.port
    except ValueError:
        return "the port is not a number from 1 to 65535"
    if not parts.hostname:
        return "no host"
    if parts.username is not None:
        return "a user name has no place in it"
    if port is None or port == 0:
        return "no port"
    if parts.path or parts.query or parts.fragment:
        return "a path after the port"
    return None


@contextlib.contextmanager
def _connect(client_cls: Any, address: str, timeout_s: float) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``address``, closed after the block.

    The Client alone waits forever for a peer that accepts and never answers (its
    timeout covers the TCP connect, not the handshake: dask/distributed#8071), and reads
    an HTTP server's reply as a message of exabytes. A handshake of our own, under a
    deadline, comes first; every failure is one ConfigError.
    """
    try:
        _handshake(address, timeout_s)
        client = client_cls(address, timeout=f"{timeout_s}s")
    except TimeoutError:  # before OSError, which it is
        reason = f"nothing answered within {timeout_s:g} s"
    except OSError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except Exception as exc:  # whatever a server that is not Dask's sends breaks in it
        reason = f"it answered, but not as a Dask scheduler ({type(exc).__name__})"
    else:
        with client:
            yield client
        return
    raise ConfigError(
        f"cannot reach the Dask scheduler at {address}: {reason}; check that `dask"
        " scheduler` runs there and that the port is the scheduler's (8786 by default, not"
        " the dashboard's 8787)")


def _handshake(address: str, timeout_s: float) -> None:
    """Connect to ``address`` and exchange Dask's handshake, within ``timeout_s``."""
    from distributed.comm.core import connect

    async def handshake() -> None:
        comm = await connect(address, timeout=timeout_s)  # type: ignore[no-untyped-call]
        await comm.close()

    asyncio.run(asyncio.wait_for(handshake(), timeout_s))


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Pin BLAS to one thread while a partition is scored.

    OpenBLAS may sum a matrix product in another order with more threads, which moves a
    probability by an ulp and can split a tie of scores: the scores of a partition must
    not depend on where it ran (Dask workers run one BLAS thread already). Without
    threadpoolctl (the ``fleet`` extra has it) this does nothing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ModuleNotFoundError:  # pragma: no cover - the fleet and test extras have it
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _dask() -> tuple[Any, Any]:
    """``distributed.Client`` and ``LocalCluster``, or a ConfigError naming the extra."""
    try:
        from distributed import Client, LocalCluster
    except ModuleNotFoundError:
        from robot_daemon.fleet import INSTALL_HINT

        raise ConfigError(INSTALL_HINT) from None
    return Client, LocalCluster
