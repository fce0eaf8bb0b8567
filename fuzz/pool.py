"""Several cases in flight against a black-box peer (``--jobs N``), backing off on rejections.

Each case is its own association on its own connection, so cases are independent; a peer that
limits its associations answers the extra ones with A-ASSOCIATE-RJ 2/3/2 (local limit
exceeded, PS3.8 Table 9-21) or refuses the connection: the window of cases in flight then
halves, and grows back by one after a run of cases that got through. Results are handed to
``on_result`` in the campaign's thread, as they complete.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from netdicom2.fuzz.strategies import Case
from netdicom2.fuzz.targets import Result, Target
from netdicom2.fuzz.wire import OutOfTime

__all__ = ["Pool"]

#: Setup failures that mean "too many at once" (fuzz.campaign.SETUP_KINDS).
_BUSY = ("rejected:", "refused:")


class Pool:
    """Up to ``jobs`` cases in flight; the window shrinks when the peer says it is busy."""

    def __init__(self, target: Target, jobs: int, on_result: Callable[[Result], None]) -> None:
        self.target = target
        self.jobs = jobs
        self.window = jobs
        self.on_result = on_result
        self.inflight: set[Future[Result]] = set()
        self.streak = 0  # cases that got through since the last back-off
        self.backoffs = 0
        self.executor = ThreadPoolExecutor(jobs, thread_name_prefix="fuzz-case")
        # A peer serving one association at a time keeps our other connections in its accept
        # queue: the target times their ARTIM from when it could accept them (PS3.8 §9.1.5).
        probe = getattr(target, "probe_serial", None)
        if probe is not None:
            probe()

    def submit(self, case: Case) -> None:
        """Run ``case`` when the window has room (handling results that complete meanwhile)."""
        while len(self.inflight) >= self.window:
            self._collect(block=True)
        self.inflight.add(self.executor.submit(self.target.run, case))
        self._collect(block=False)

    def drain(self) -> None:
        """Wait for every case in flight (OutOfTime once the budget ended)."""
        out = False
        while self.inflight:
            try:
                self._collect(block=True)
            except OutOfTime:
                out = True
        if out:
            raise OutOfTime

    def close(self) -> None:
        """Stop the worker threads (cases in flight end at the campaign's deadline)."""
        self.executor.shutdown(wait=True, cancel_futures=True)

    def _collect(self, *, block: bool) -> None:
        """Hand completed results on; OutOfTime after all of them when a case ran out of time."""
        done, _ = wait(self.inflight, timeout=None if block else 0, return_when=FIRST_COMPLETED)
        out = False
        for future in done:
            self.inflight.discard(future)
            try:
                result = future.result()
            except OutOfTime:
                out = True
                continue
            self._adapt(result)
            self.on_result(result)
        if out:
            raise OutOfTime

    def _adapt(self, result: Result) -> None:
        """Halve the window on a busy answer; grow it by one after 2 x window good cases."""
        judgement = result.judgement
        if judgement.verdict == "setup-failed" and judgement.detail.startswith(_BUSY):
            self.window = max(1, self.window // 2)
            self.streak = 0
            self.backoffs += 1
            return
        self.streak += 1
        if self.window < self.jobs and self.streak >= 2 * self.window:
            self.window += 1
            self.streak = 0
