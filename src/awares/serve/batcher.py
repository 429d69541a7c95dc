"""Dynamic batching: requests that arrive together run as one engine batch on one worker thread."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from ..runtime.isolation import run_isolated


class QueueFull(Exception):
    """The bounded queue is full: the caller should answer 503 and ask the client to retry."""


@dataclass
class Job:
    """One request waiting for the worker; ``key`` groups the jobs one engine call can run together."""

    payload: Any
    key: tuple[Any, ...]
    future: Future = field(default_factory=Future)


class Batcher:
    """A bounded queue and one worker thread that takes up to ``max_batch`` jobs and runs each group
    of equal ``key`` through ``run(key, payloads) -> results``. A group that raises is rerun one job
    at a time (``run_isolated``), so a bad request, or one that meets a bug, fails alone.

    After the first job the worker takes what is queued, and waits (at most ``max_wait_ms`` after
    the first) only while requests are ``arriving``: read and prepared, not yet submitted. A request
    that comes alone runs at once (a fixed window cost every lone request its whole length)."""

    def __init__(
        self,
        run: Callable[[tuple[Any, ...], list[Any]], list[Any]],
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        queue_size: int = 64,
    ):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self.batch_sizes: list[int] = []  # the size of every batch run, for metrics and tests
        self.pending, self.lock = 0, threading.Lock()  # requests arriving
        self.worker = threading.Thread(target=self._work, name="awares-batcher", daemon=True)
        self.worker.start()

    def submit(self, payload: Any, key: tuple[Any, ...] = ()) -> Future:
        """Queue a job; its future holds the result or the exception. Raises ``QueueFull``."""
        job = Job(payload, key)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"the queue holds {self.queue.maxsize} requests") from None
        return job.future

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Marks a request being read and prepared, whom a batch being formed waits for."""
        with self.lock:
            self.pending += 1
        try:
            yield
        finally:
            with self.lock:
                self.pending -= 1

    def close(self) -> None:
        self.queue.put(None)
        self.worker.join(timeout=30)

    def _take(self) -> list[Job] | None:
        first = self.queue.get()
        if first is None:
            return None
        jobs, deadline = [first], time.monotonic() + self.max_wait
        while len(jobs) < self.max_batch:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if not self.pending or left <= 0:
                    break
                try:  # briefly: an arriving request may be refused instead of queued
                    job = self.queue.get(timeout=min(left, 0.002))
                except queue.Empty:
                    continue
            if job is None:
                self.queue.put(None)  # stop after this batch
                break
            jobs.append(job)
        return jobs

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            for key, group in groupby(sorted(jobs, key=lambda j: repr(j.key)), key=lambda j: j.key):
                self._run_group(key, list(group))

    def _run_group(self, key: tuple[Any, ...], jobs: list[Job]) -> None:
        def run(payloads: list[Any]) -> list[Any]:
            self.batch_sizes.append(len(payloads))
            return self.run(key, payloads)

        for job, result in zip(jobs, run_isolated(run, [j.payload for j in jobs])):
            if isinstance(result, BaseException):  # AwaresError: the client's (400); another: a bug (500)
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
