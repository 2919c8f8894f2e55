"""The driver of scripts/bench-peers: runs each shape for smol-durable, Absurd and DBOS Transact
on one PostgreSQL server, interleaved, and prints one table (see scripts/bench-peers --help).
With --baseline, another smol-durable-benches binary (an older build) runs beside ours as one
more system, and our rows show our median against the baseline's.

Runs under the peers' venv (it needs psycopg). Never part of CI.

Each row is one process on a fresh database, after a setup process on it (schema, and for the
replay the workflow to replay) that the numbers leave out. Around the measured process it reads
the database's `pg_stat_database.xact_commit`, the cluster's `pg_stat_wal.wal_sync` (after
`pg_stat_clear_snapshot()`, once the process and so its connections are gone, since a backend
reports its statistics on exit), the server's CPU from /proc (the postmaster's live children's
utime+stime, plus the postmaster's own utime+stime and cutime+cstime, where exited backends
accrue) and the measured process's own CPU (getrusage of children). Right before each row it
probes the disk: the median of 21 write+fsync of a small file beside the data directory.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

# In the order each round runs them; "baseline" only with --baseline.
SYSTEMS = ["ours", "baseline", "absurd", "dbos"]
NAMES = {
    "ours": "smol-durable",
    "baseline": "smol-durable (baseline)",
    "absurd": "Absurd",
    "dbos": "DBOS",
}
# Our binary or the baseline's: the same --peer-shape mode of benches/src/peers.rs.
OURS = {"ours": "bin", "baseline": "baseline"}
NAME_WIDTH = max(len(name) for name in NAMES.values())
SHAPES = ["sequential", "concurrent", "replay"]
# Sizes: steps of the sequential workflow, workflows of ten steps run at once, steps replayed.
FULL = {"sequential": 1000, "concurrent": 100, "replay": 10000}
QUICK = {"sequential": 200, "concurrent": 20, "replay": 1000}
# Lets the backends of a finished process exit and report their statistics.
SETTLE_SEC = 0.5
HERE = Path(__file__).resolve().parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Server:
    """The PostgreSQL server the rows run on, through a connection to its default database."""

    def __init__(self, url: str):
        self.url = url
        self.admin = psycopg.connect(url, autocommit=True)
        data = self.admin.execute("SHOW data_directory").fetchone()[0]
        self.data_dir = Path(data) if Path(data).is_dir() else None
        self.postmaster = None
        if self.data_dir is not None:
            try:
                pid = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
                self.postmaster = int(pid)
            except (OSError, ValueError):
                self.postmaster = None
        self.wal_sync_sql = "SELECT wal_sync FROM pg_stat_wal"
        try:
            self.admin.execute(self.wal_sync_sql).fetchone()
        except psycopg.Error:
            # PostgreSQL 18 moved WAL sync counts to pg_stat_io.
            self.wal_sync_sql = (
                "SELECT sum(fsyncs)::bigint FROM pg_stat_io WHERE object = 'wal'"
            )

    def database_url(self, name: str) -> str:
        server, _ = self.url.rsplit("/", 1)
        return f"{server}/{name}"

    def fresh_database(self, name: str) -> str:
        self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.admin.execute(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def counters(self, database: str) -> tuple:
        self.admin.execute("SELECT pg_stat_clear_snapshot()")
        xact = self.admin.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
        wal = self.admin.execute(self.wal_sync_sql).fetchone()
        return (xact[0] if xact else 0) or 0, (wal[0] if wal else 0) or 0

    def cpu_seconds(self):
        """The server's CPU time so far, or None when its processes cannot be read here."""
        if self.postmaster is None:
            return None
        ticks = os.sysconf("SC_CLK_TCK")

        def stat(pid):
            text = Path(f"/proc/{pid}/stat").read_text()
            # The command name may hold spaces and parentheses: split after its last ')'.
            return text.rsplit(")", 1)[1].split()

        try:
            own = stat(self.postmaster)
        except OSError:
            return None
        # Fields 14-17 (utime, stime, cutime, cstime) are at 11-14 once pid and comm are cut.
        total = sum(int(own[i]) for i in (11, 12, 13, 14))
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = stat(entry)
            except OSError:
                continue  # exited meanwhile: its time is in the postmaster's cutime now
            if int(fields[1]) == self.postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / ticks

    def probe_fsync(self):
        """Median latency (s) of write+fsync of a small file on the data directory's disk."""
        if self.data_dir is None:
            return None
        path = self.data_dir.parent / "bench-peers-fsync-probe"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError:
            return None
        samples = []
        try:
            for _ in range(21):
                os.write(fd, b"probe")
                started = time.perf_counter()
                os.fsync(fd)
                samples.append(time.perf_counter() - started)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
        return statistics.median(samples)


def command(system: str, args, shape: str, url: str, size: int, phase: str) -> list:
    common = [
        "--url", url, "--size", str(size), "--connections", str(args.connections),
        "--phase", phase,
    ]
    if system in OURS:
        return [getattr(args, OURS[system]), "--peer-shape", shape] + common
    script = HERE / f"{system}_shapes.py"
    return [sys.executable, str(script), "--shape", shape] + common


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_row(server: Server, args, system: str, shape: str, size: int) -> dict:
    database = f"peers_{system}_{shape}"
    url = server.fresh_database(database)
    setup = subprocess.run(
        command(system, args, shape, url, size, "setup"), capture_output=True, text=True
    )
    if setup.returncode != 0:
        raise SystemExit(f"{system} {shape} setup failed:\n{setup.stdout}{setup.stderr}")
    time.sleep(SETTLE_SEC)
    fsync = server.probe_fsync()
    tx_before, wal_before = server.counters(database)
    cpu_before = server.cpu_seconds()
    client_before = children_cpu()
    run = subprocess.run(
        command(system, args, shape, url, size, "run"), capture_output=True, text=True
    )
    client = children_cpu() - client_before
    if run.returncode != 0:
        raise SystemExit(f"{system} {shape} failed:\n{run.stdout}{run.stderr}")
    time.sleep(SETTLE_SEC)
    tx_after, wal_after = server.counters(database)
    cpu_after = server.cpu_seconds()
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"{system} {shape} printed no result:\n{run.stdout}{run.stderr}")
    out = json.loads(lines[-1])
    server.drop_database(database)
    total = max(out.get("total_steps", out["steps"]), 1)
    row = {
        "steps": out["steps"],
        "seconds": out["seconds"],
        "tx": (tx_after - tx_before - out.get("uncounted", 0)) / total,
        "wal": (wal_after - wal_before) / total,
        "server_cpu": None
        if cpu_before is None or cpu_after is None
        else (cpu_after - cpu_before) / total,
        "client_cpu": client / total,
        "fsync": fsync,
    }
    log(
        f"  {shape:<10} {NAMES[system]:<{NAME_WIDTH}} {metric_text(shape, row)}  "
        f"tx/step {row['tx']:.2f}  wal sync/step {row['wal']:.2f}  "
        f"fsync {ms(row['fsync'])}"
    )
    return row


def metric(shape: str, row: dict) -> float:
    """The shape's headline number: ms per step, steps per second, or seconds."""
    if shape == "sequential":
        return row["seconds"] * 1e3 / max(row["steps"], 1)
    if shape == "concurrent":
        return row["steps"] / max(row["seconds"], 1e-9)
    return row["seconds"]


def metric_text(shape: str, row: dict) -> str:
    value = metric(shape, row)
    if shape == "sequential":
        return f"{value:.3f} ms/step"
    if shape == "concurrent":
        return f"{value:,.0f} steps/s"
    return f"{value:.3f} s"


def ms(seconds) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.2f} ms"


def median_row(rows: list) -> dict:
    """Field-wise medians of one system's rounds of one shape."""
    out = {}
    for key in rows[0]:
        values = [row[key] for row in rows if row[key] is not None]
        out[key] = statistics.median(values) if values else None
    return out


def ratio_text(shape: str, ours: dict, peer: dict, name: str) -> str:
    mine, theirs = metric(shape, ours), metric(shape, peer)
    if theirs <= 0:
        return "n/a"
    what = {
        "sequential": "time per step",
        "concurrent": "throughput",
        "replay": "replay time",
    }[shape]
    return f"{mine / theirs:.2f}× {name}'s {what}"


def print_table(results: dict, args) -> None:
    print()
    print(
        f"PostgreSQL: {args.server_version}; {args.rounds} round(s), medians; "
        f"concurrent: {args.connections} connection(s) each"
    )
    print(f"smol-durable: {args.bin}")
    if args.baseline:
        print(f"smol-durable (baseline): {args.baseline}")
    header = (
        f"{'shape':<11} {'system':<{NAME_WIDTH}} {'steps':>6} {'median':>16} "
        f"{'ours vs this row':>34} "
        f"{'tx/step':>8} {'WAL sync/step':>14} {'server CPU/step':>16} "
        f"{'client CPU/step':>16} {'fsync':>9}"
    )
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        ours = results.get(("ours", shape))
        baseline = results.get(("baseline", shape))
        for system in SYSTEMS:
            rows = results.get((system, shape))
            if not rows:
                continue
            row = median_row(rows)
            if system == "ours":
                versus = (
                    "—"
                    if baseline is None
                    else ratio_text(shape, row, median_row(baseline), "baseline")
                )
            elif system == "baseline" or ours is None:
                versus = "—"
            else:
                versus = ratio_text(shape, median_row(ours), row, NAMES[system])
            server_cpu = (
                "n/a" if row["server_cpu"] is None else f"{row['server_cpu'] * 1e6:,.0f} µs"
            )
            print(
                f"{shape:<11} {NAMES[system]:<{NAME_WIDTH}} {row['steps']:>6.0f} "
                f"{metric_text(shape, row):>16} {versus:>34} {row['tx']:>8.2f} "
                f"{row['wal']:>14.2f} {server_cpu:>16} "
                f"{row['client_cpu'] * 1e6:>13,.0f} µs {ms(row['fsync']):>9}"
            )
    print()
    print(
        "steps: timed steps of one row (sequential: one workflow; concurrent: all workflows; "
        "replay: steps replayed).\n"
        "median: ms per step (sequential), steps per second from the first submit to the last "
        "completion (concurrent),\n"
        "  seconds of the replaying attempt (replay); 'ours vs this row' divides our median "
        "by the peer's,\n"
        "  and on our own row by the baseline's (--baseline: another smol-durable-benches "
        "binary, run exactly as ours).\n"
        "tx, WAL sync, CPU per step: over every step the measured process ran (the "
        "sequential warm-up's 20 included),\n"
        "  setup excluded; tx leaves out the completion polls of the concurrent shape. "
        "server CPU: all PostgreSQL processes;\n"
        "  client CPU: the measured process (smol-durable: Rust; peers: Python, interpreter start "
        "included). fsync: median probe before the rows."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="see scripts/bench-peers --help")
    parser.add_argument("--url", required=True)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", help="another smol-durable-benches binary")
    parser.add_argument("--only", choices=SYSTEMS)
    args = parser.parse_args()
    if args.rounds < 1 or args.connections < 1:
        raise SystemExit("--rounds and --connections must be at least 1")
    if args.only == "baseline" and not args.baseline:
        raise SystemExit("--only baseline needs --baseline PATH")
    sizes = QUICK if args.quick else FULL
    systems = [
        system for system in SYSTEMS if system != "baseline" or args.baseline
    ]
    if args.only:
        systems = [args.only]
    server = Server(args.url)
    args.server_version = server.admin.execute("SHOW server_version").fetchone()[0]
    if server.postmaster is None:
        log("bench-peers: the server's processes are not readable here: no server CPU")
    results: dict = {}
    for shape in SHAPES:
        for round_ in range(1, args.rounds + 1):
            log(f"{shape}, round {round_} of {args.rounds}")
            for system in systems:
                row = run_row(server, args, system, shape, sizes[shape])
                results.setdefault((system, shape), []).append(row)
    print_table(results, args)


if __name__ == "__main__":
    main()
