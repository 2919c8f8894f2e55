#!/usr/bin/env bash
# Regenerates every golden under golden/<case>/ from cases.json by running the released
# smol-wf 0.3.4 CLI (the oracle). The project's tests never run this script: they only read
# the checked-in goldens. It needs the smol-wf 0.3.4 binary (path in $SMOL_WF, default
# /work/shared/tools/smol-wf-0.3.4), bash and python3 (for JSON and SQLite). Nothing is built.
#
# For each case, two runs, each against its own fresh throwaway database in a temp dir
# (never the default database), with the working directory set to this directory and the
# script path relative to it (so messages contain stable relative paths where smol-wf
# prints the path as given):
#   $SMOL_WF run <script> --db <tmp>/plain.db  <args...>  -> stdout.txt, stderr.txt, exit_code
#   $SMOL_WF run <script> --db <tmp>/events.db --events <args...>
#                                               -> events.jsonl, events_stderr.txt, events_exit_code
# plus steps.jsonl: the step rows of the plain run's database (checkpoint name, kind, state,
# signature hash and canonical signature JSON), sorted by checkpoint name; empty when the run
# created no steps or no database.
# The agent provider is smol-wf's default (debug) unless a case's args say otherwise.
# Outputs are raw (run ids, startTime, elapsedNanos differ per run; the test normalises).
#
# Usage: ./regenerate.sh [case-name...]   (no names: every case in cases.json)
set -euo pipefail

SMOL_WF="${SMOL_WF:-/work/shared/tools/smol-wf-0.3.4}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

if [[ ! -x "$SMOL_WF" ]]; then
  echo "smol-wf binary not found or not executable: $SMOL_WF (set SMOL_WF)" >&2
  exit 2
fi
version="$("$SMOL_WF" --version 2>&1 || true)"
if [[ "$version" != *"0.3.4"* ]]; then
  echo "expected smol-wf 0.3.4, got: $version" >&2
  exit 2
fi

# A fixed, dedicated temp dir (emptied first) rather than a random one: smol-wf's --debug
# output prints the --db path, and a stable path keeps that golden stable.
WORK="${TMPDIR:-/tmp}/smol-wf-compat-goldens"
rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
# Keep anything smol-wf might write to its state directory out of the user's home.
export XDG_STATE_HOME="$WORK/state"
mkdir -p "$XDG_STATE_HOME"

# Emit "name<TAB>script" lines, or for one case its args NUL-separated.
list_cases() {
  python3 - "$@" <<'PY'
import json, sys
cases = json.load(open("cases.json"))
wanted = set(sys.argv[1:])
for c in cases:
    if not wanted or c["name"] in wanted:
        print(c["name"] + "\t" + c["script"])
PY
}
case_args() {
  python3 - "$1" <<'PY'
import json, sys
for c in json.load(open("cases.json")):
    if c["name"] == sys.argv[1]:
        sys.stdout.write("".join(a + "\0" for a in c["args"]))
PY
}
dump_steps() {
  python3 - "$1" <<'PY'
import json, os, sqlite3, sys
db = sys.argv[1]
if not os.path.exists(db):
    sys.exit(0)
con = sqlite3.connect("file:" + db + "?mode=ro", uri=True)
try:
    rows = con.execute(
        "SELECT checkpoint_name, step_kind, state, input_signature_hash, input_signature_json "
        "FROM sw_workflow_steps ORDER BY checkpoint_name").fetchall()
except sqlite3.Error:
    rows = []
for name, kind, state, h, sig in rows:
    print(json.dumps({"checkpointName": name, "stepKind": kind, "state": state,
                      "inputSignatureHash": h, "inputSignatureJson": sig}, ensure_ascii=False))
PY
}

count=0
while IFS=$'\t' read -r name script; do
  [[ -n "$name" ]] || continue
  args=()
  while IFS= read -r -d '' a; do args+=("$a"); done < <(case_args "$name")
  out="golden/$name"
  rm -rf "$out"
  mkdir -p "$out"
  tmp="$WORK/$name"
  mkdir -p "$tmp"

  set +e
  timeout 120 "$SMOL_WF" run "$script" --db "$tmp/plain.db" "${args[@]}" \
    >"$out/stdout.txt" 2>"$out/stderr.txt" </dev/null
  echo $? >"$out/exit_code"
  timeout 120 "$SMOL_WF" run "$script" --db "$tmp/events.db" --events "${args[@]}" \
    >"$out/events.jsonl" 2>"$out/events_stderr.txt" </dev/null
  echo $? >"$out/events_exit_code"
  set -e
  dump_steps "$tmp/plain.db" >"$out/steps.jsonl"

  printf '%-32s exit=%s events_exit=%s\n' "$name" "$(cat "$out/exit_code")" "$(cat "$out/events_exit_code")"
  count=$((count + 1))
done < <(list_cases "$@")

echo "regenerated $count case(s) with $version"
