"""`vitrine worker`: the background jobs, off the request path, one worker per deployment.

Each domain defines its own jobs where it lives, as a `jobs(settings)` function returning
`Job`s: popular searches in server/search.py, retraining in server/recommend/retrain.py,
the purge of old events in server/retention.py. This module collects them and runs each on
an APScheduler interval trigger (a missed run is run once, late, never twice at a time).

Only the holder of the deployment's lease in the store runs jobs: a second `vitrine worker`
(or `vitrine demo` on the same database) waits, renewing its attempt every third of
`worker_lease_s`, and takes over once the first stopped renewing (at once when it stopped
cleanly and gave the lease up). Every job is idempotent, so a run cut short by a restart,
or run twice around a takeover, loses or doubles nothing.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from server.store import StoreBusy, StoreError

log = logging.getLogger("vitrine.worker")

LEASE = "worker"  # the one lease of a deployment's worker
# The modules that define jobs, each with a `jobs(settings) -> list[Job]`.
JOB_MODULES = (
    "server.search", "server.recommend.retrain", "server.retention", "server.measure.rollups", "server.customers.webhooks",
    "server.audiences.snapshots",
)


@dataclass(frozen=True)
class Job:
    name: str
    interval_s: float
    run: Callable[[Any], str]  # run(services) does the work and says what it did, in one line


def all_jobs(settings: Any) -> list[Job]:
    return [job for module in JOB_MODULES for job in importlib.import_module(module).jobs(settings)]


class Worker:
    """Runs the jobs while holding the lease: in the foreground (`run_forever`), in the
    background of another process (`start` / `stop`, for `vitrine demo`), or each once
    (`run_once`, for cron and tests)."""

    def __init__(
        self, services: Any, jobs: list[Job] | None = None, log: Callable[[str], None] = print,
        holder: str | None = None,
    ) -> None:
        self.services = services
        self.jobs = all_jobs(services.settings) if jobs is None else jobs
        self.log = log
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.lease_s = float(services.settings.worker_lease_s)
        self._held_until = 0.0  # monotonic time until which the lease is surely ours
        self._stop = threading.Event()
        self._scheduler: Any = None
        self.running: set[str] = set()  # the jobs running now
        self._lease_thread: threading.Thread | None = None

    # -- the lease -------------------------------------------------------------------
    @property
    def holding(self) -> bool:
        return time.monotonic() < self._held_until

    def _take_lease(self) -> bool:
        """Take or renew the lease. When the store cannot answer, the lease stays ours until
        it would have run out: the row in the store runs out at the same time."""
        asked = time.monotonic()
        try:
            if self.services.store.take_lease(LEASE, self.holder, self.lease_s):
                self._held_until = asked + self.lease_s
            else:
                self._held_until = 0.0
        except (StoreBusy, StoreError) as exc:
            log.warning("worker %s: could not renew the lease: %s", self.holder, exc)
        return self.holding

    def _keep_lease(self, on_taken: Callable[[], None] = lambda: None,
                    on_lost: Callable[[], None] = lambda: None) -> None:
        """Until stopped: renew the lease every third of it, or try to take it."""
        had, waiting_said = self.holding, False
        while not self._stop.is_set():
            has = self._take_lease()
            if has and not had:
                self.log(f"{_now()} worker {self.holder}: took the lease; running the jobs")
                on_taken()
            elif had and not has:
                self.log(f"{_now()} worker {self.holder}: lost the lease to another worker; waiting")
                on_lost()
            elif not has and not waiting_said:
                self.log(f"{_now()} worker {self.holder}: another worker holds the lease; waiting to take over")
            waiting_said = waiting_said or not has
            had = has
            self._stop.wait(self.lease_s / 3)

    def _release_lease(self) -> None:
        if self.holding:
            try:
                self.services.store.release_lease(LEASE, self.holder)
            except (StoreBusy, StoreError) as exc:
                log.warning("worker %s: could not give the lease up (it runs out by itself): %s", self.holder, exc)
        self._held_until = 0.0

    # -- jobs ------------------------------------------------------------------------
    def run_job(self, job: Job) -> None:
        if not self.holding:  # another worker has it now: that one runs the jobs
            return
        started = time.monotonic()
        self.running.add(job.name)
        try:
            done = job.run(self.services)
        except Exception as exc:  # one job's failure must not stop the others; it runs again next time
            log.exception("job %s failed", job.name)
            self.log(f"{_now()} {job.name}: failed: {type(exc).__name__}: {exc}")
            return
        finally:
            self.running.discard(job.name)
        self.log(f"{_now()} {job.name}: {done} ({time.monotonic() - started:.1f} s)")

    def run_once(self) -> bool:
        """Run every job once, holding the lease meanwhile; False (nothing run) when another
        worker holds it."""
        if not self._take_lease():
            return False
        renewing = threading.Thread(target=self._keep_lease, name="vitrine-worker-lease", daemon=True)
        renewing.start()
        try:
            for job in self.jobs:
                self.run_job(job)
        finally:
            self._stop.set()
            renewing.join()
            self._release_lease()
        return True

    def start(self) -> None:
        """Schedule the jobs and start trying for the lease, in background threads."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max(1, len(self.jobs)))},
            # A run missed (paused, or the last one still going) happens once, however late.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=timezone.utc,
        )
        first = datetime.now(timezone.utc)  # every job runs as soon as the lease is taken
        for job in self.jobs:
            self._scheduler.add_job(
                self.run_job, "interval", args=[job], seconds=job.interval_s, id=job.name, name=job.name,
                next_run_time=first,
            )
        self._scheduler.start(paused=True)
        self._lease_thread = threading.Thread(
            target=self._keep_lease, args=(self._scheduler.resume, self._scheduler.pause),
            name="vitrine-worker-lease", daemon=True,
        )
        self._lease_thread.start()

    def stop(self) -> None:
        """Stop scheduling and give the lease up; a job still running finishes on its own."""
        self._stop.set()
        if self._lease_thread is not None:
            self._lease_thread.join()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._release_lease()

    def run_forever(self) -> None:
        """`vitrine worker`: run until SIGTERM or Ctrl-C."""
        every = ", ".join(f"{job.name} every {job.interval_s:g} s" for job in self.jobs)
        self.log(f"{_now()} worker {self.holder}: {every}")
        previous = signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.stop()
            self.log(f"{_now()} worker {self.holder}: stopped")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
