"""The interface every peer's shape script shares with `smol-durable-benches --peer-shape`:
the arguments it takes and the one JSON line it prints."""

import argparse
import json


def arguments(doc: str) -> argparse.Namespace:
    """The shape, the database, the size, the connections and the phase to run."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--shape", required=True, choices=["sequential", "concurrent", "replay"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", required=True, type=int)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--phase", choices=["all", "setup", "run"], default="all")
    return parser.parse_args()


def report(out: dict) -> None:
    """Prints a shape's outcome as the one JSON line scripts/peers/compare.py reads."""
    out.setdefault("uncounted", 0)
    print(json.dumps(out), flush=True)
