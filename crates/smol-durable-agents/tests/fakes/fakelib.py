"""Shared helpers for the fake coding-agent CLIs (claude, codex, opencode, pi).

The fakes imitate what the real CLIs print today, as described in
/work/shared/reference/agent-providers.md ("What the CLIs print today").
Standard library only; each fake imports this module via

    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

Common protocol (all four fakes):

* Scenario: ``FAKE:<name>`` (name = [a-z0-9_]+) in the prompt, else the env var
  ``FAKE_AGENT_SCENARIO``, else ``ok``.
* Structured value: the rest of the line after ``FAKE_JSON:`` in the prompt,
  parsed as JSON (if it is not valid JSON the raw text is used as a string
  value and emitted verbatim where the CLI emits JSON text); else
  ``{"answer": 42}``.
* Log: when ``FAKE_AGENT_LOG`` is set, one JSON line is appended to that file
  (single ``write`` call, O_APPEND) before anything is printed.
* ``slow``: a grandchild ``sh -c 'sleep $FAKE_AGENT_SLEEP; touch $FAKE_AGENT_MARKER'``
  (sleep default 30, marker only when the env var is set) is started in the
  fake's own process group and waited for; ``$FAKE_AGENT_MARKER.started`` holds
  its pid once it runs.
* Lines are printed one JSON object per line, flushed, with a pause of
  ``FAKE_AGENT_LINE_DELAY`` seconds (default 0.05) after each line.

Usage numbers are deliberately distinct so a parser bug shows.  Totals:
input (uncached) 11, output 7, cache read 100, cache write 5, cost 0.0123.
Where the real CLI reports per step/message, two steps are emitted that sum to
those totals: STEPS[0] + STEPS[1].
"""

import json
import os
import re
import subprocess
import sys
import time

DEFAULT_STRUCTURED = {"answer": 42}

# Totals a correct provider must arrive at.
TOTAL = {"input": 11, "output": 7, "cache_read": 100, "cache_write": 5, "cost": 0.0123}
# Per-step numbers for CLIs that report per step / per message (sum == TOTAL).
STEPS = [
    {"input": 6, "output": 3, "cache_read": 60, "cache_write": 2, "cost": 0.01},
    {"input": 5, "output": 4, "cache_read": 40, "cache_write": 3, "cost": 0.0023},
]

FAKE_FILE_LISTING = "Cargo.toml\nREADME.md\nsrc\n"
FAILED_TOOL_OUTPUT = "ls: cannot access 'does-not-exist': No such file or directory\n"

COMMON_SCENARIOS = [
    "ok",
    "structured",
    "exit",
    "no_session",
    "missing_final",
    "error_line",
    "failed_tool",
    "slow",
    "rate_limit",
    "fenced_json",
]

_SCENARIO_RE = re.compile(r"FAKE:([a-z0-9_]+)")


def line_delay():
    try:
        return float(os.environ.get("FAKE_AGENT_LINE_DELAY", "0.05"))
    except ValueError:
        return 0.05


def emit(obj):
    """Print one JSON object as one line, flush, then pause briefly."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    time.sleep(line_delay())


def eprint(text):
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


def fail(code, message):
    """Write a message to stderr and exit with `code` (no stdout)."""
    eprint(message)
    sys.stdout.flush()
    sys.exit(code)


def scenario_of(prompt):
    m = _SCENARIO_RE.search(prompt or "")
    if m:
        return m.group(1)
    env = os.environ.get("FAKE_AGENT_SCENARIO", "").strip()
    return env or "ok"


def structured_of(prompt):
    """Return (value, json_text) for the structured answer of this prompt."""
    for line in (prompt or "").splitlines():
        idx = line.find("FAKE_JSON:")
        if idx >= 0:
            raw = line[idx + len("FAKE_JSON:"):].strip()
            try:
                value = json.loads(raw)
            except ValueError:
                return raw, raw  # invalid JSON: used verbatim
            return value, json.dumps(value, separators=(",", ":"))
    return DEFAULT_STRUCTURED, json.dumps(DEFAULT_STRUCTURED, separators=(",", ":"))


def first_line(prompt):
    lines = (prompt or "").splitlines()
    return lines[0] if lines else ""


def ok_text(agent, prompt):
    return "fake %s answer: %s" % (agent, first_line(prompt))


def fenced(json_text):
    return "Here is the result:\n```json\n%s\n```" % json_text


def write_log(agent, prompt, scenario, **extra):
    """Append one JSON line to $FAKE_AGENT_LOG (one write call)."""
    path = os.environ.get("FAKE_AGENT_LOG")
    if not path:
        return
    record = {
        "agent": agent,
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "prompt": prompt,
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "scenario": scenario,
    }
    record.update(extra)
    data = (json.dumps(record) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def run_slow_grandchild():
    """Start `sh -c 'sleep $FAKE_AGENT_SLEEP; touch $FAKE_AGENT_MARKER'` and wait.

    The grandchild stays in our process group, so a caller that kills only
    its direct child (instead of the whole group) leaves it running and the
    marker file appears after the sleep.  Its stdio is /dev/null (a real
    agent's tool subprocess talks to the agent, not to the agent's stdout), so
    the caller's stdout reader is not held open by it.
    """
    env = dict(os.environ)
    env.setdefault("FAKE_AGENT_SLEEP", "30")
    if env.get("FAKE_AGENT_MARKER"):
        script = 'sleep "$FAKE_AGENT_SLEEP"; touch "$FAKE_AGENT_MARKER"'
    else:
        script = 'sleep "$FAKE_AGENT_SLEEP"'
    proc = subprocess.Popen(["sh", "-c", script], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if env.get("FAKE_AGENT_MARKER"):
        # Tells a test the tool is running: now cancelling must stop it.
        with open(env["FAKE_AGENT_MARKER"] + ".started", "w") as started:
            started.write(str(proc.pid))
    proc.wait()


def now_ms():
    return int(time.time() * 1000)


def now_iso():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def find_git_root(start):
    d = os.path.abspath(start)
    while True:
        if os.path.exists(os.path.join(d, ".git")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def check_scenario(agent, scenario, supported):
    if scenario not in supported:
        fail(97, "fake %s: unknown scenario %r (supported: %s)" % (agent, scenario, ", ".join(supported)))


def parse_args(argv, value_flags, bool_flags=()):
    """Tiny argv parser: returns (flags dict, positionals list, unknown flags list).

    `--flag value` and `--flag=value` are accepted for value flags; repeated
    value flags keep the last value.  Unknown `-x`/`--xyz` flags are recorded
    (and treated as boolean) so the fake can still run.
    """
    flags = {}
    positionals = []
    unknown = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            positionals.extend(argv[i + 1:])
            break
        if a.startswith("-") and a != "-":
            name, eq, val = a.partition("=")
            if name in value_flags:
                if eq:
                    flags[value_flags[name]] = val
                else:
                    if i + 1 >= len(argv):
                        fail(2, "error: option '%s' argument missing" % name)
                    flags[value_flags[name]] = argv[i + 1]
                    i += 1
            elif name in bool_flags:
                flags[bool_flags[name]] = True
            else:
                unknown.append(a)
        else:
            positionals.append(a)
        i += 1
    return flags, positionals, unknown
