"""Where labelling and walkers run: in process, in a local process pool, or on a Dask cluster.

One small interface: ``map(fn, items) -> results`` in input order, and ``imap(fn, items)``
yielding ``(index, result)`` as tasks finish (so a caller can save each result at once).
``fn`` and the items must be picklable for the pool and Dask (module-level functions or small
callable objects such as :class:`~uq_bias.campaign.oracles.OracleSpec`-bound labellers).
The pool uses the ``spawn`` start method: workers import what they need, nothing is forked
from a process that already holds torch threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence


def init_worker(threads: int) -> None:
    """Run in every worker: limit torch to ``threads`` threads."""
    import torch

    torch.set_num_threads(max(1, int(threads)))


def init_pool_worker(threads: int) -> None:
    """Run in every process-pool worker: :func:`init_worker`, and Ctrl-C ignored (the terminal
    sends it to the whole process group; the parent stops the campaign and ends the workers,
    so they print no traceback of their own)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init_worker(threads)


class Executor(ABC):
    """Runs ``fn`` over items. Use as a context manager, or call :meth:`close`."""

    @abstractmethod
    def imap(self, fn: Callable, items: Sequence) -> Iterator[tuple[int, object]]:
        """Yield ``(index, fn(items[index]))`` in completion order."""

    def map(self, fn: Callable, items: Iterable) -> list:
        """``[fn(item) for item in items]``, computed by this executor, in input order."""
        items = list(items)
        results: list = [None] * len(items)
        for index, result in self.imap(fn, items):
            results[index] = result
        return results

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release workers (nothing for the in-process executor)."""

    def abort(self) -> None:
        """Release workers at once, dropping running tasks (after an interrupt)."""
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class InProcess(Executor):
    """Runs everything in this process, one item after the other."""

    def imap(self, fn, items):
        for index, item in enumerate(items):
            yield index, fn(item)


class ProcessPool(Executor):
    """A local ``concurrent.futures.ProcessPoolExecutor`` (spawn) of ``workers`` processes."""

    def __init__(self, workers: int = 2, threads_per_worker: int = 1):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if workers < 1:
            raise ValueError(f"ProcessPool: workers must be >= 1, got {workers}")
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_pool_worker,
            initargs=(threads_per_worker,),
        )

    def imap(self, fn, items):
        from concurrent.futures import as_completed

        futures = {self.pool.submit(fn, item): index for index, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """End the workers now: a running task (a long reference calculation) is not waited
        for; its frame is labelled again on resume."""
        for process in list((self.pool._processes or {}).values()):
            process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(Executor):
    """A Dask distributed cluster: the scheduler at ``address``, or a new local cluster.

    Args:
        address: scheduler address such as ``tcp://10.0.0.1:8786`` (started with
            ``dask scheduler`` / ``dask worker`` or dask-jobqueue on SLURM); None starts a
            ``LocalCluster`` of ``workers`` processes for this run.
        workers: processes of the local cluster.
        threads_per_worker: torch threads in each worker.
    """

    def __init__(self, address: str | None = None, workers: int = 2, threads_per_worker: int = 1):
        try:
            from distributed import Client, LocalCluster
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the dask executor needs dask distributed: `pip install uq_bias[dask]`"
            ) from err
        self.cluster = None
        if address is None:
            self.cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
            self.client = Client(self.cluster)
        else:
            self.client = Client(address)
        self.client.run(init_worker, threads_per_worker)

    def imap(self, fn, items):
        from distributed import as_completed

        futures = self.client.map(fn, list(items), pure=False)
        index = {future.key: k for k, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                yield index[future.key], future.result()
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(
    kind: str = "inprocess",
    workers: int = 2,
    address: str | None = None,
    threads_per_worker: int = 1,
) -> Executor:
    """An executor by name: ``inprocess``, ``process`` or ``dask``."""
    if kind == "inprocess":
        return InProcess()
    if kind == "process":
        return ProcessPool(workers, threads_per_worker)
    if kind == "dask":
        return DaskExecutor(address, workers, threads_per_worker)
    raise ValueError(f"unknown executor {kind!r}; choose one of inprocess, process, dask")
