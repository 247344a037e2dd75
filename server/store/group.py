"""Group commit: concurrent writes share one transaction and one commit (one fsync).

Event batches and page views from many requests are handed to one writer thread per store.
It takes whatever is waiting (up to `max_jobs`), runs every job in one transaction and
commits once; each caller gets its own result only after that commit, so a 202 still means
"on disk". Jobs of one kind can be written together (`run_combined`): the event batches of a
group are one call of the store's batch writer, a statement per table for all of them. A job
that fails makes the group roll back, and then every job of the group runs again in a
transaction of its own: the failing one fails alone, the others are committed.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

from sqlalchemy.engine import Connection

from server.store import StoreBusy, StoreConflict

Job = Callable[[Connection], Any]


@dataclass
class _Pending:
    work: Job
    durable: bool
    done: Future = field(default_factory=Future)
    # run_combined: the jobs of a group with the same `combine` run as one call of it.
    combine: Callable[[Connection, list[Any]], list[Any]] | None = None
    item: Any = None


class GroupWriter:
    def __init__(
        self, writing: Callable[[bool], ContextManager[Connection]], wait_s: float, max_jobs: int = 64,
        max_waiting: int = 1024,
    ) -> None:
        self._writing = writing  # the store's write transaction (durable or not)
        self.wait_s = wait_s
        self.max_jobs = max_jobs
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_waiting)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.groups = 0  # transactions committed (for tests and benchmarks)
        # Once the store was found busy, one write at a time tries again (a probe) and the
        # others fail at once, rather than each waiting the whole timeout behind the same
        # lock; the first write that gets through ends it.
        self._busy = False
        self._probing = False
        self._state_lock = threading.Lock()

    def run_combined(self, combine: Callable[[Connection, list[Any]], list[Any]], item: Any, durable: bool) -> Any:
        """`combine(conn, [item, ...])[i]` inside a shared transaction, once committed: the
        items of every job of a group with the same `combine` (say, every event batch that
        came in meanwhile) are written by one call of it, a statement per table for all."""
        return self.run(lambda conn: combine(conn, [item])[0], durable, combine=combine, item=item)

    def run(self, work: Job, durable: bool, combine: Callable[[Connection, list[Any]], list[Any]] | None = None,
            item: Any = None) -> Any:
        """`work(conn)` inside a shared transaction; its result once that is committed."""
        done = self.submit(work, durable, combine, item)
        try:
            return done.result(timeout=self.wait_s)
        except TimeoutError:
            raise StoreBusy(f"the write was not committed within {self.wait_s:.1f} s") from None

    def submit_combined(self, combine: Callable[[Connection, list[Any]], list[Any]], item: Any, durable: bool) -> Future:
        """run_combined without waiting: the future of its result, set once committed."""
        return self.submit(lambda conn: combine(conn, [item])[0], durable, combine=combine, item=item)

    def submit(self, work: Job, durable: bool, combine: Callable[[Connection, list[Any]], list[Any]] | None = None,
               item: Any = None) -> Future:
        """Queue `work` for the next group and return at once: the future of its result, set
        once committed (an event loop awaits it without holding a thread). Raises StoreBusy at
        once when the store was found busy and another write is finding out whether it is free
        again, or when too many writes wait."""
        probe = False
        with self._state_lock:
            if self._busy:
                if self._probing:
                    raise StoreBusy("the store is busy; another write is finding out whether it is free again")
                self._probing = probe = True
        pending = _Pending(work, durable, combine=combine, item=item)
        if probe:
            pending.done.add_done_callback(self._probed)
        try:
            self._ensure_thread()
            self._queue.put_nowait(pending)
        except queue.Full:
            if probe:
                self._probed(pending.done)
            raise StoreBusy("too many writes are waiting for the store") from None
        return pending.done

    def _probed(self, _: Future) -> None:
        with self._state_lock:
            self._probing = False

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="vitrine-group-commit", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < self.max_jobs:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._commit(group)
                    return
                group.append(nxt)
            self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        live = [p for p in group if p.done.set_running_or_notify_cancel()]
        if not live:
            return
        results: list[Any] = []
        try:
            with self._writing(any(p.durable for p in live)) as conn:
                results = self._run_all(conn, live)
        except StoreBusy as exc:
            # The store itself is not available: no job of the group can be written, nor can
            # the ones queued behind it, which would each wait the same timeout again.
            self._busy = True
            for pending in live + self._drain():
                if pending in live or pending.done.set_running_or_notify_cancel():
                    pending.done.set_exception(exc)
            return
        except Exception as exc:  # noqa: BLE001 - one job's problem must not fail the others
            if len(live) == 1 and not isinstance(exc, StoreConflict):
                live[0].done.set_exception(exc)
                return
            for pending in live:
                self._alone(pending)
            return
        self.groups += 1
        self._busy = False
        for pending, result in zip(live, results):
            pending.done.set_result(result)

    @staticmethod
    def _run_all(conn: Connection, live: list[_Pending]) -> list[Any]:
        """Each job's result: single jobs in their order, then each kind of combined ones at once."""
        results: list[Any] = [None] * len(live)
        combined: dict[Any, list[int]] = {}
        for n, pending in enumerate(live):
            if pending.combine is None:
                results[n] = pending.work(conn)
            else:
                combined.setdefault(pending.combine, []).append(n)
        for combine, jobs in combined.items():
            for n, result in zip(jobs, combine(conn, [live[n].item for n in jobs]), strict=True):
                results[n] = result
        return results

    def _drain(self) -> list[_Pending]:
        drained: list[_Pending] = []
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return drained
            if pending is None:  # close() asked: keep the sentinel for the loop
                self._queue.put(None)
                return drained
            drained.append(pending)

    def _alone(self, pending: _Pending, attempts: int = 3) -> None:
        for attempt in range(attempts):
            try:
                with self._writing(pending.durable) as conn:
                    result = pending.work(conn)
                break
            except StoreConflict as exc:  # chosen as a deadlock's victim: the same work again succeeds
                if attempt + 1 == attempts:
                    pending.done.set_exception(exc)
                    return
            except Exception as exc:  # noqa: BLE001
                pending.done.set_exception(exc)
                return
        self.groups += 1
        self._busy = False
        pending.done.set_result(result)
