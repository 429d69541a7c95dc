"""The serve batcher: requests arriving together share a batch; one that comes alone does not wait."""

import threading

from awares.serve.batcher import Batcher


def echo(key, payloads):
    return payloads


def test_a_request_that_comes_alone_runs_without_waiting_out_the_window():
    batcher = Batcher(echo, max_batch=8, max_wait_ms=60_000)  # a window no test would sit through
    try:
        assert batcher.submit("alone").result(timeout=30) == "alone"
        assert batcher.batch_sizes == [1]
    finally:
        batcher.close()


def test_requests_still_arriving_join_the_batch_being_formed():
    batcher = Batcher(echo, max_batch=8, max_wait_ms=60_000)
    try:
        ready, entered = threading.Event(), threading.Semaphore(0)
        futures = []

        def arrive(name):
            with batcher.arriving():
                entered.release()
                ready.wait(30)  # being read and prepared while the first request is already queued
                futures.append(batcher.submit(name))

        late = [threading.Thread(target=arrive, args=(f"late-{i}",)) for i in range(2)]
        for thread in late:
            thread.start()
        for _ in late:
            assert entered.acquire(timeout=30)
        futures.append(batcher.submit("first"))
        ready.set()
        for thread in late:
            thread.join(30)
        assert sorted(f.result(timeout=30) for f in futures) == ["first", "late-0", "late-1"]
        assert batcher.batch_sizes == [3]
    finally:
        batcher.close()
