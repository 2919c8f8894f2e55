"""Absurd (Python SDK, `absurd-sdk` on PyPI) running the shapes of scripts/bench-peers.

    python absurd_shapes.py --shape sequential|concurrent|replay --url URL --size N
                            [--connections C] [--phase all|setup|run]

Prints one JSON line like our bench binary's `--peer-shape` mode:
{"steps": timed steps, "seconds": their time, "total_steps": steps the database counters
cover, "uncounted": transactions made only to watch progress}.

The setup phase installs Absurd's schema with `absurdctl init` (the SQL that the `absurdctl`
PyPI package bundles, for the same release as the SDK) and creates the queue with the SDK's
`create_queue`.

How Absurd is used (the way its docs intend): a task registered with `register_task` whose
steps are `ctx.step(name, fn)` checkpoints of an instant no-op "agent" returning a small JSON
value; tasks are started with `spawn` and executed by a worker that claims them.
- sequential: `spawn` then `work_batch()` (claim and execute in this process), after a 20-step
  warm-up task in the same process; timed from the spawn to the end of `work_batch`;
- concurrent: one `Absurd` client holds exactly one connection (the SDK has no pool), so C
  connections are C clients, each running `start_worker(concurrency=ceil(N / C))` in a thread
  (the SDK runs a worker's tasks in a thread pool over that client's connection); all N tasks
  are spawned through the first client; timed from the first spawn to the last run's
  `completed_at`;
- replay: the setup process spawns a task with `max_attempts=2` whose first attempt throws
  after its N checkpoints, so Absurd schedules the retry; the measured process runs
  `work_batch()`, which claims attempt 2, loads the task's checkpoints and serves every
  `ctx.step` from them instead of executing. Only that `work_batch` is timed.
"""

import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
from absurd_sdk import Absurd

import shape_cli

# Absurd's release the SDK, and so the schema, must match.
ABSURD_VERSION = "0.5.1"
QUEUE = "default"
# Steps of each task of the concurrent shape, and the warm-up of the sequential one.
CONCURRENT_STEPS = 10
WARM_UP_STEPS = 20
# Idle workers look for new tasks this often (SDK default 0.25 s); our worker is woken by a
# notification instead, so the peers get a short poll.
POLL_SEC = 0.05
# How often the concurrent shape looks for its last completion; the end time is read from the
# runs' own completion stamps, so this only bounds the wait.
DONE_POLL_SEC = 0.02
# Set by the replay's setup: the first attempt throws after its last checkpoint.
FAIL_AT_END = {"on": False}


def agent(i: int) -> dict:
    """An instant no-op "agent" returning a small JSON value."""
    return {"step": i, "text": "ok"}


def bench(params: dict, ctx) -> dict:
    last: dict = {}
    for i in range(params["steps"]):
        last = ctx.step(f"step {i}", lambda i=i: agent(i))
    if FAIL_AT_END["on"]:
        raise RuntimeError("stopping so the task is retried")
    return last


def client(url: str) -> Absurd:
    app = Absurd(url, queue_name=QUEUE)
    app.register_task("bench")(bench)
    return app


def install_schema(url: str) -> None:
    """Applies the schema bundled in `absurdctl` and creates the queue."""
    absurdctl = Path(sys.executable).with_name("absurdctl")
    out = subprocess.run(
        [str(absurdctl), "init", "--database", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if f"{ABSURD_VERSION} via bundled" not in out:
        raise SystemExit(f"absurdctl did not apply its bundled {ABSURD_VERSION} schema: {out}")
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SELECT absurd.get_schema_version()").fetchone()[0]
    if version != ABSURD_VERSION:
        raise SystemExit(f"schema version {version}, expected {ABSURD_VERSION}")
    app = client(url)
    app.create_queue(QUEUE)
    app.close()


def task_state(app: Absurd, task_id) -> str:
    snapshot = app.fetch_task_result(str(task_id))
    return snapshot.state if snapshot else "missing"


def sequential(url: str, steps: int) -> dict:
    app = client(url)
    warm = app.spawn("bench", {"steps": WARM_UP_STEPS})
    app.work_batch()
    started = time.perf_counter()
    spawned = app.spawn("bench", {"steps": steps})
    app.work_batch()
    elapsed = time.perf_counter() - started
    for task in (warm, spawned):
        state = task_state(app, task["task_id"])
        if state != "completed":
            raise SystemExit(f"task {task['task_id']} is {state}")
    app.close()
    return {"steps": steps, "seconds": elapsed, "total_steps": steps + WARM_UP_STEPS}


def concurrent(url: str, runs: int, connections: int) -> dict:
    apps = [client(url) for _ in range(connections)]
    per_worker = math.ceil(runs / connections)
    threads = [
        threading.Thread(
            target=app.start_worker,
            kwargs={
                "worker_id": f"bench-{k}",
                "concurrency": per_worker,
                "poll_interval": POLL_SEC,
            },
            daemon=True,
        )
        for k, app in enumerate(apps)
    ]
    for thread in threads:
        thread.start()
    # Progress is watched on a connection of its own, outside the C measured.
    with psycopg.connect(url, autocommit=True) as observer:
        started_at = time.time()
        started = time.perf_counter()
        for _ in range(runs):
            apps[0].spawn("bench", {"steps": CONCURRENT_STEPS})
        polls = 0
        while True:
            polls += 1
            done, last_at = observer.execute(
                f"SELECT count(*), extract(epoch FROM max(completed_at))::float8 "
                f"FROM absurd.r_{QUEUE} WHERE state = 'completed'"
            ).fetchone()
            if done >= runs:
                break
            if time.perf_counter() - started > 600:
                raise SystemExit(f"only {done} of {runs} tasks completed")
            time.sleep(DONE_POLL_SEC)
    for app in apps:
        app.stop_worker()
    for thread in threads:
        thread.join()
    for app in apps:
        app.close()
    steps = runs * CONCURRENT_STEPS
    return {
        "steps": steps,
        "seconds": last_at - started_at,
        "total_steps": steps,
        "uncounted": polls,
    }


def replay_setup(url: str, steps: int) -> None:
    FAIL_AT_END["on"] = True
    app = client(url)
    spawned = app.spawn("bench", {"steps": steps}, max_attempts=2)
    app.work_batch()
    state = task_state(app, spawned["task_id"])
    if state not in ("pending", "sleeping"):
        raise SystemExit(f"the setup task should wait for its retry, it is {state}")
    app.close()


def replay(url: str, steps: int) -> dict:
    app = client(url)
    started = time.perf_counter()
    app.work_batch()
    elapsed = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT state, attempts, completed_payload FROM absurd.t_{QUEUE}"
        ).fetchall()
        checkpoints = conn.execute(f"SELECT count(*) FROM absurd.c_{QUEUE}").fetchone()[0]
    expected = [("completed", 2, {"step": steps - 1, "text": "ok"})]
    if rows != expected or checkpoints != steps:
        raise SystemExit(f"unexpected replay: {rows}, {checkpoints} checkpoints")
    app.close()
    return {"steps": steps, "seconds": elapsed, "total_steps": steps}


def main() -> None:
    args = shape_cli.arguments(__doc__)
    if args.phase in ("all", "setup"):
        install_schema(args.url)
        if args.shape == "replay":
            replay_setup(args.url, args.size)
        if args.phase == "setup":
            return
    FAIL_AT_END["on"] = False
    if args.shape == "sequential":
        out = sequential(args.url, args.size)
    elif args.shape == "concurrent":
        out = concurrent(args.url, args.size, args.connections)
    else:
        out = replay(args.url, args.size)
    shape_cli.report(out)


if __name__ == "__main__":
    main()
