"""DBOS Transact (Python, `dbos` on PyPI) running the shapes of scripts/bench-peers.

    python dbos_shapes.py --shape sequential|concurrent|replay --url URL --size N
                          [--connections C] [--phase all|setup|run]

Prints one JSON line like our bench binary's `--peer-shape` mode:
{"steps": timed steps, "seconds": their time, "total_steps": steps the database counters
cover, "uncounted": transactions made only to watch progress}.

How DBOS is used (the way its docs intend):
- a `@DBOS.workflow()` whose steps are calls of a `@DBOS.step()` function returning a small
  JSON value; DBOS records each step's output in its system database (`dbos` schema);
- sequential: the workflow called directly (it executes in this process), after a 20-step
  warm-up workflow in the same process;
- concurrent: the setup registers a queue with `DBOS.register_queue(name, worker_concurrency=N,
  polling_interval_sec=0.05)` (default 1 s; ours is woken by a notification); the measured
  process waits until DBOS polls it, then `queue.enqueue(bench, 10)` N times; DBOS's queue
  thread dequeues them and this process runs each in its own thread. Timed from the first
  enqueue to the last `completed_at`;
- replay: the setup process runs a workflow of N steps (id set with `SetWorkflowID`) and dies
  (`os._exit`) right after its last step, leaving it PENDING with N recorded steps, as a crash
  does; the measured process hands it over with `DBOS.resume_workflow(id)` (what recovery
  does: re-enqueue on DBOS's internal queue) and waits with `handle.get_result()`. Every
  step's output is read back from the system database instead of executing. Timed: the
  replaying attempt only, from its dequeue (`started_at_epoch_ms`) to its completion
  (`completed_at`), both stamped by DBOS; the internal queue's poll before it (up to 1 s, not
  configurable) is left out, and printed on stderr with the whole wait.

Connections: `sys_db_pool_size` = --connections (DBOS sets `max_overflow=0`, so that is the
pool's ceiling); DBOS adds one LISTEN/NOTIFY connection of its own outside the pool (our
store's listener holds one of its pool's).
"""

import os
import sys
import threading
import time

from dbos import DBOS, DBOSConfig, SetWorkflowID

import shape_cli

# Steps of each workflow of the concurrent shape, and the warm-up of the sequential one.
CONCURRENT_STEPS = 10
WARM_UP_STEPS = 20
# The concurrent shape's queue, registered by the setup so the measured process finds it.
QUEUE = "bench"
# It polls as eagerly as our worker is woken by a notification (DBOS's default is 1 s).
QUEUE_POLL_SEC = 0.05
# The replay's workflow, found again by the measured process.
REPLAY_ID = "bench-replay"
# How often the concurrent shape looks for its last completion; the end time is read from the
# workflows' own completion stamps, so this only bounds the wait.
DONE_POLL_SEC = 0.02
# Set by the replay's setup: die right after the last step, as a crash would.
CRASH_AT_END = {"on": False}


@DBOS.step()
def agent(i: int) -> dict:
    """An instant no-op "agent" returning a small JSON value."""
    return {"step": i, "text": "ok"}


@DBOS.workflow()
def bench(steps: int) -> dict:
    last: dict = {}
    for i in range(steps):
        last = agent(i)
    if CRASH_AT_END["on"]:
        sys.stdout.flush()
        os._exit(0)
    return last


def launch(url: str, pool_size: int, executor: str) -> None:
    config: DBOSConfig = {
        "name": "bench-peers",
        "system_database_url": url,
        "sys_db_pool_size": pool_size,
        "executor_id": executor,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()


def sequential(steps: int) -> dict:
    bench(WARM_UP_STEPS)
    started = time.perf_counter()
    bench(steps)
    elapsed = time.perf_counter() - started
    return {"steps": steps, "seconds": elapsed, "total_steps": steps + WARM_UP_STEPS}


def concurrent(url: str, runs: int) -> dict:
    import psycopg

    queue = DBOS.retrieve_queue(QUEUE)
    if queue is None:
        raise SystemExit(f"queue {QUEUE} missing: run --phase setup first")
    # DBOS's queue manager starts a queue's worker thread when it sees the queue (it looks
    # every second); wait for it so the timing starts with a queue being polled.
    deadline = time.monotonic() + 10
    while not any(t.name == f"queue-worker-{QUEUE}" for t in threading.enumerate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"DBOS never started polling queue {QUEUE}")
        time.sleep(0.01)
    # Progress is watched on a connection of its own, outside DBOS's pool.
    with psycopg.connect(url, autocommit=True) as observer:
        started_ms = time.time() * 1000
        started = time.perf_counter()
        handles = [queue.enqueue(bench, CONCURRENT_STEPS) for _ in range(runs)]
        ids = [handle.get_workflow_id() for handle in handles]
        polls = 0
        while True:
            polls += 1
            done, last_ms = observer.execute(
                "SELECT count(*), max(completed_at) FROM dbos.workflow_status "
                "WHERE workflow_uuid = ANY(%s) AND status = 'SUCCESS'",
                (ids,),
            ).fetchone()
            if done >= runs:
                break
            if time.perf_counter() - started > 600:
                raise SystemExit(f"only {done} of {runs} workflows completed")
            time.sleep(DONE_POLL_SEC)
    steps = runs * CONCURRENT_STEPS
    return {
        "steps": steps,
        "seconds": (last_ms - started_ms) / 1000,
        "total_steps": steps,
        "uncounted": polls,
    }


def replay_setup(steps: int) -> None:
    CRASH_AT_END["on"] = True
    with SetWorkflowID(REPLAY_ID):
        bench(steps)
    raise SystemExit("the replay's setup workflow should have died after its last step")


def replay(url: str, steps: int) -> dict:
    import psycopg

    status = DBOS.get_workflow_status(REPLAY_ID)
    if status is None or status.status != "PENDING":
        raise SystemExit(f"expected a pending workflow {REPLAY_ID}, found {status}")
    recorded = len(DBOS.list_workflow_steps(REPLAY_ID))
    if recorded != steps:
        raise SystemExit(f"expected {steps} recorded steps, found {recorded}")
    # Hands the workflow to this executor through DBOS's internal queue (as its recovery
    # does); calling it again under the same id would only wait for its owner.
    started = time.perf_counter()
    result = DBOS.resume_workflow(REPLAY_ID).get_result()
    wall = time.perf_counter() - started
    if result != {"step": steps - 1, "text": "ok"}:
        raise SystemExit(f"unexpected replay result {result}")
    # The replaying attempt alone: from its dequeue to its completion stamp, leaving out the
    # internal queue's poll (up to 1 s, not configurable) before it.
    with psycopg.connect(url, autocommit=True) as observer:
        began_ms, ended_ms = observer.execute(
            "SELECT started_at_epoch_ms, completed_at FROM dbos.workflow_status "
            "WHERE workflow_uuid = %s",
            (REPLAY_ID,),
        ).fetchone()
    print(f"dbos replay: {wall:.3f} s from resume_workflow to its result", file=sys.stderr)
    return {
        "steps": steps,
        "seconds": (ended_ms - began_ms) / 1000,
        "total_steps": steps,
        "uncounted": 1,
    }


def main() -> None:
    args = shape_cli.arguments(__doc__)
    # The concurrent shape is held to --connections; the others use one connection at a time.
    pool = args.connections if args.shape == "concurrent" else max(args.connections, 2)
    if args.phase in ("all", "setup"):
        # The replay's workflow belongs to another executor, so launching the measured process
        # does not recover it by itself: the measured call does.
        launch(args.url, pool, "setup" if args.shape == "replay" else "local")
        if args.shape == "concurrent":
            DBOS.register_queue(
                QUEUE, worker_concurrency=args.size, polling_interval_sec=QUEUE_POLL_SEC
            )
        if args.shape == "replay":
            if args.phase == "all":
                raise SystemExit("--shape replay needs --phase setup, then --phase run")
            replay_setup(args.size)
        DBOS.destroy()
        if args.phase == "setup":
            return
    launch(args.url, pool, "local")
    try:
        if args.shape == "sequential":
            out = sequential(args.size)
        elif args.shape == "concurrent":
            out = concurrent(args.url, args.size)
        else:
            out = replay(args.url, args.size)
    finally:
        DBOS.destroy()
    shape_cli.report(out)


if __name__ == "__main__":
    main()
