"""Running `trader evaluate`'s jobs in worker processes that never outlive the evaluation.

Owns the process pool: spawned workers (torch does not survive a fork well), results handed to
the event loop as they finish, and the two ways a worker could otherwise be left running. A job
that fails, or an interrupt or cancellation of the evaluation, terminates every worker at once
instead of letting the queued jobs run on; and on Linux each worker asks the kernel to kill it
when its parent dies, so even a parent killed by SIGKILL (or by SIGTERM, whose default action
runs no cleanup) leaves no orphan writing into the output directory. It must not know what a job
does.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")

#: prctl(2) option: the signal a process receives when its parent thread dies.
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: be killed when the evaluation's process dies (Linux; elsewhere a no-op).

    The parent may already have died before the request was made, in which case this process
    was re-parented and exits at once.
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not fatal: the parent's own cleanup still terminates the pool
    if os.getppid() != parent_pid:
        os._exit(1)


async def run_in_workers(
    function: Callable[[JobT], ResultT],
    jobs: Sequence[JobT],
    *,
    workers: int,
    on_result: Callable[[ResultT], None] | None = None,
) -> list[ResultT]:
    """`function(job)` for every job in `workers` spawned processes; results in finishing order.

    `function` must be importable by name (a module-level function). `on_result` is called in
    the event loop as each result arrives.

    Raises:
        Exception: the first job's failure, as the worker raised it; every worker is then
            terminated (the jobs still queued are dropped).
    """
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(
        processes=max(workers, 1), initializer=die_with_parent, initargs=(os.getpid(),)
    )
    try:
        futures = [_submit(pool, loop, function, job) for job in jobs]
        results: list[ResultT] = []
        for next_done in asyncio.as_completed(futures):
            result = await next_done
            if on_result is not None:
                on_result(result)
            results.append(result)
        pool.close()
    except BaseException:
        pool.terminate()  # a failure, Ctrl-C or cancellation stops every job now
        raise
    finally:
        pool.join()
    return results


def _submit(
    pool: multiprocessing.pool.Pool,
    loop: asyncio.AbstractEventLoop,
    function: Callable[[JobT], ResultT],
    job: JobT,
) -> asyncio.Future[ResultT]:
    """Queue one job; its future is settled in the loop from the pool's result thread."""
    future: asyncio.Future[ResultT] = loop.create_future()

    def settle(result: ResultT | None, error: BaseException | None) -> None:
        if future.done():  # cancelled while the job ran
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    pool.apply_async(
        function,
        (job,),
        callback=lambda result: loop.call_soon_threadsafe(settle, result, None),
        error_callback=lambda error: loop.call_soon_threadsafe(settle, None, error),
    )
    return future
