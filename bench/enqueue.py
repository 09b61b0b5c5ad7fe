"""CPU and time a campaign batch's lane wake-ups cost its sender: arq's ``enqueue_job`` for each
job, ten at a time (what the batch did before the twenty-fifth session), next to
``JobQueue.enqueue_many`` (one Lua script a call; docs/overrides.md).

    .venv/bin/python bench/enqueue.py [--jobs 50] [--rounds 5]

Against an embedded Redis on loopback (app/embedded.py), ``--jobs`` ``deliver_domain`` jobs a
round with fresh ids, the two ways alternately. CPU is this process's (``getrusage``), wall the
elapsed time; Redis's own CPU is printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.append(str(Path(__file__).resolve().parents[1]))

from app.adapters.queue import JobQueue, QueuedJob  # noqa: E402
from app.embedded import EmbeddedStack  # noqa: E402

AT_ONCE = 10  # what the campaign batch gathered at a time before enqueue_many


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _redis_cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def _one_by_one(queue: JobQueue, jobs: list[QueuedJob]) -> None:
    for start in range(0, len(jobs), AT_ONCE):
        await asyncio.gather(
            *(
                queue.enqueue(j.function, *j.args, job_id=j.job_id)
                for j in jobs[start : start + AT_ONCE]
            )
        )


async def run(url: str, redis_pid: int, n: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    queue = JobQueue(url, "bench")
    await queue.pool()  # connected before the first round
    out: dict[str, list[dict[str, float]]] = {"enqueue_job": [], "enqueue_many": []}
    for r in range(rounds):
        for way in out:
            jobs = [
                QueuedJob("deliver_domain", (f"m{r}-{k}", f"d{k}.test"), f"{way}:{r}:{k}")
                for k in range(n)
            ]
            wall, cpu, redis = time.perf_counter(), _cpu(), _redis_cpu(redis_pid)
            if way == "enqueue_job":
                await _one_by_one(queue, jobs)
            else:
                assert await queue.enqueue_many(jobs) == n
            out[way].append(
                {
                    "wall_ms": round((time.perf_counter() - wall) * 1000, 2),
                    "cpu_ms": round((_cpu() - cpu) * 1000, 2),
                    "redis_cpu_ms": round((_redis_cpu(redis_pid) - redis) * 1000, 2),
                }
            )
    await queue.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-enqueue-") as tmp:
        stack = EmbeddedStack(Path(tmp) / "servers")
        stack.start(mongo=False, redis=True, typesense=False)
        try:
            redis = next(s for s in stack.servers if s.name == "redis")
            out = asyncio.run(run(redis.url, redis.process.pid, a.jobs, a.rounds))
        finally:
            stack.stop()
    print(json.dumps({"jobs": a.jobs, "rounds": out}, indent=1))
    for way, rows in out.items():
        cpu = sorted(r["cpu_ms"] for r in rows)
        wall = sorted(r["wall_ms"] for r in rows)
        print(
            f"{way:13s} cpu median {cpu[len(cpu) // 2]:7.2f} ms  wall median {wall[len(wall) // 2]:7.2f} ms"
        )


if __name__ == "__main__":
    main()
