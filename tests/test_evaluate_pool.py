"""`trader evaluate`'s worker pool: results come back, and no worker outlives a failure, an
interrupt or the death of the evaluation's process (real spawned processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.eventually import eventually, until
from trader._evaluate_pool import run_in_workers

ROOT = Path(__file__).resolve().parents[1]
#: A job that only ends early if it is terminated.
LONG_JOB_S = 120.0


def square(n: int) -> int:
    """A job that succeeds."""
    return n * n


def sleep_then_record(job: tuple[str, float]) -> int:
    """A job that writes its worker's pid to `job[0]`, then runs for `job[1]` seconds; a
    negative duration fails instead, after that many seconds."""
    path, seconds = job
    if seconds < 0:
        time.sleep(-seconds)
        raise ValueError("the replay broke")
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of a still-running parent stays a zombie until reaped: not alive.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


async def test_every_result_comes_back_and_each_is_reported() -> None:
    """All jobs run; `on_result` sees each result as it arrives."""
    seen: list[int] = []
    results = await run_in_workers(square, [1, 2, 3, 4, 5], workers=2, on_result=seen.append)
    assert sorted(results) == [1, 4, 9, 16, 25]
    assert sorted(seen) == sorted(results)


async def test_failed_job_is_raised_and_terminates_the_job_running_beside_it(
    tmp_path: Path,
) -> None:
    """The first failure is raised as the worker raised it, without waiting for the two-minute
    job in the other worker, which is terminated."""
    running = tmp_path / "running.pid"
    jobs = [(str(running), LONG_JOB_S), ("", -0.5)]
    started = time.monotonic()
    with pytest.raises(ValueError, match="the replay broke"):
        await run_in_workers(sleep_then_record, jobs, workers=2)
    # Not a speed check: a pool that waited for the running job would return after it ended.
    assert time.monotonic() - started < LONG_JOB_S / 2
    assert not _alive(int(running.read_text()))


async def test_cancelled_evaluation_terminates_its_workers(tmp_path: Path) -> None:
    """Cancelling the evaluation (Ctrl-C in the CLI) ends the job in flight."""
    running = tmp_path / "running.pid"
    task = asyncio.create_task(
        run_in_workers(sleep_then_record, [(str(running), LONG_JOB_S)], workers=1)
    )
    await until(running.exists, what="the job to start")
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Not a speed check: a pool that waited for the job would return after it ended.
    assert time.monotonic() - started < LONG_JOB_S / 2
    assert not _alive(int(running.read_text()))


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux only")
def test_workers_die_when_the_evaluation_process_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the evaluation's process (no cleanup can run) still ends its workers."""
    pid_file = tmp_path / "worker.pid"
    script = (
        "import asyncio\n"
        "from trader._evaluate_pool import run_in_workers\n"
        "from tests.test_evaluate_pool import sleep_then_record\n"
        f"asyncio.run(run_in_workers(sleep_then_record, [({str(pid_file)!r}, 300.0)], "
        "workers=1))\n"
    )
    log = tmp_path / "parent.log"  # its resource tracker reports the pool it could not close
    with log.open("w") as stderr:
        parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=stderr)
    try:
        eventually(pid_file.exists, what="the worker to start")
        worker = int(pid_file.read_text())
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        eventually(lambda: not _alive(worker), what="the worker to die with its parent")
    finally:
        parent.kill()
        parent.wait(timeout=10)
