#!/usr/bin/env bash
# Runs the shared yardstick (the project's performance reference, outside the
# repository: ../shared/bench beside a checkout, or $YARDSTICK) RUNS times for
# one scenario, each threatbeat run paired with a floor run on the same
# simulators' settings, and prints every line plus min/median/max of the
# figures and of the ratios to the floor of the same pair.
#
#   bench/yardstick.sh SCENARIO [RUNS]      (from the repository root)
#
# SCENARIO:
#   history      200 000 attributes, 50 per event, the history stream only
#                (var.current_state: false), the targets of issue 14
#   current      the same with the current state on (the default): a history
#                document per attribute plus a current-state document per valid
#                to_ids attribute; the agent runs `run --once`
#   one-event    one MISP event of 200 000 attributes, history only
#   big-page     one page of 100 events of 13 000 attributes (about 500 MB), history only
#   bare         history through a fileset without the ECS mapping: the MISP
#                fileset's input, split, disk queue and output, its processors
#                replaced by the document id alone (what the agent costs
#                before any mapping; docs/performance.md, "The bound")
#
# AGENT_CONFIG_EXTRA, when set, is appended to the agent's configuration
# (top-level YAML, e.g. 'queue.mem: {}'), to measure one setting's share.
#
# The release binary must be built first (cargo build --release). The pairs
# are kept in target/yardstick/SCENARIO.results; figures go to
# docs/performance.md.
set -euo pipefail

scenario="${1:?usage: bench/yardstick.sh history|current|one-event|big-page|bare [RUNS]}"
runs="${2:-5}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
yardstick="${YARDSTICK:-$repo/../shared/bench}"
export YARDSTICK_TARGET="${YARDSTICK_TARGET:-$repo/target/yardstick}"
binary="$repo/target/release/threatbeat"
[ -x "$binary" ] || { echo "build the release binary first: cargo build --release" >&2; exit 2; }
[ -x "$yardstick/run.sh" ] || { echo "no yardstick at $yardstick (set YARDSTICK)" >&2; exit 2; }

current_state=false
misp_args=""
attributes=200000
timeout=300
case "$scenario" in
    history) ;;
    current) current_state=true ;;
    one-event) misp_args="--per-event 200000" ;;
    big-page) misp_args="--per-event 13000"; attributes=1300000; timeout=900 ;;
    bare) ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
module=threatintel
fileset=misp
if [ "$scenario" = bare ]; then
    # A user definition beside the configuration (modules.d/definitions/):
    # the MISP fileset with its processors replaced by the id alone.
    module=bench
    fileset=bare
    mkdir -p "$work/modules.d/definitions/bench/bare"
    printf 'module: bench\nfileset: bare\nextends: threatintel/misp\n' \
        > "$work/modules.d/definitions/bench/bare/manifest.yml"
    cat > "$work/modules.d/definitions/bench/bare/processors.yml" <<'EOF'
- fingerprint:
    fields: [Event.uuid, Event.Attribute.uuid, Event.Attribute.timestamp]
    method: sha1
    encoding: base64
    layout: elasticsearch
    target_field: "@metadata._id"
EOF
fi
cat > "$work/perf.yml" <<EOF
path.data: $work/data
logging.level: warning
threatbeat.modules:
  - module: $module
    $fileset:
      var.url: \${MISP_URL}/events/restSearch
      var.api_token: \${MISP_KEY}
      var.first_interval: 5000h
      var.interval: 10h
      var.current_state: $current_state
output.elasticsearch:
  hosts: ["\${ES_URL}"]
${AGENT_CONFIG_EXTRA:-}
EOF

mkdir -p "$YARDSTICK_TARGET"
# With the current state on, the documents are not one per attribute, and
# run.sh would start as many attributes as documents it waits for: the agent
# runs `--once` against the same simulators started here, and the figures
# are read as run.sh reads them (time -v, the sink's ids).
run_once_against_sims() {
    local sims="$YARDSTICK_TARGET/release" key="bench-$RANDOM$RANDOM" misp_port sink_port
    "$sims/misp-sim" --port 0 --attributes "$attributes" --key "$key" > "$work/misp.log" 2>&1 &
    local misp_pid=$!
    "$sims/es-sink" --port 0 > "$work/sink.log" 2>&1 &
    local sink_pid=$!
    for _ in $(seq 1 200); do
        misp_port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/misp.log")
        sink_port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/sink.log")
        [ -n "$misp_port" ] && [ -n "$sink_port" ] && break
        sleep 0.05
    done
    local started ended
    started=$(date +%s%3N)
    MISP_URL="http://127.0.0.1:$misp_port" MISP_KEY="$key" ES_URL="http://127.0.0.1:$sink_port" \
        /usr/bin/time -v -o "$work/time.txt" "$binary" run --once -c "$work/perf.yml" > /dev/null 2>&1
    ended=$(date +%s%3N)
    local stats
    stats=$(curl -sf "http://127.0.0.1:$sink_port/_sim/stats/total")
    kill "$misp_pid" "$sink_pid"; wait "$misp_pid" "$sink_pid" 2>/dev/null || true
    python3 - "$work/time.txt" "$stats" "$started" "$ended" "$scenario" "$attributes" <<'PY'
import json, re, sys
time_text = open(sys.argv[1]).read()
field = lambda name: re.search(rf"{name}: (.*)", time_text).group(1)
stats = json.loads(sys.argv[2])
wall = (int(sys.argv[4]) - int(sys.argv[3])) / 1000
unique = stats["unique_ids"]
print(json.dumps({"name": sys.argv[5], "n": int(sys.argv[6]), "wall_s": wall, "docs_per_s": round(unique / wall),
    "peak_rss_mb": round(int(field("Maximum resident set size [(]kbytes[)]")) / 1024, 1),
    "cpu_s": round(float(field("User time [(]seconds[)]")) + float(field("System time [(]seconds[)]")), 2),
    "unique_ids": unique, "duplicates": stats.get("docs_created", 0) + stats.get("docs_updated", 0) - unique,
    "complete": True}))
PY
}

results="$YARDSTICK_TARGET/$scenario.results"
: > "$results"
for run in $(seq 1 "$runs"); do
    floor=$("$yardstick/run.sh" --timeout "$timeout" ${misp_args:+--misp-args "$misp_args"} --limit "$attributes" | tail -1)
    rm -rf "$work/data"
    if [ "$scenario" = current ]; then
        agent=$(run_once_against_sims)
    else
        agent=$("$yardstick/run.sh" --timeout "$timeout" ${misp_args:+--misp-args "$misp_args"} "$scenario" "$attributes" -- "$binary" run -c "$work/perf.yml" | tail -1)
    fi
    echo "run $run floor: $floor"
    echo "run $run agent: $agent"
    printf '%s\t%s\n' "$floor" "$agent" >> "$results"
done

python3 - "$results" "$scenario" <<'EOF'
import json, statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
pairs = [(json.loads(floor), json.loads(agent)) for floor, agent in rows]
def spread(values):
    values = sorted(values)
    shown = [values[0], statistics.median(values), values[-1]]
    if shown[0] >= 1000:
        return " / ".join(f"{value:,.0f}" for value in shown)
    return " / ".join(f"{value:.3g}" for value in shown)
complete = all(agent["complete"] and agent["duplicates"] == 0 for _, agent in pairs)
print(f"\n{sys.argv[2]}: {len(pairs)} paired runs, every run complete without duplicates: {complete}")
print("min / median / max")
for key, label in [("docs_per_s", "docs/s"), ("cpu_s", "CPU s"), ("peak_rss_mb", "peak RSS MB")]:
    print(f"  floor {label}: {spread([floor[key] for floor, _ in pairs])}")
    print(f"  agent {label}: {spread([agent[key] for _, agent in pairs])}")
# The agent's documents per attribute (2 with the current state on) count as
# the work of one attribute: the ratio compares attributes per second.
print(f"  docs/s ratio to the floor (attributes): {spread([agent['docs_per_s'] / agent['unique_ids'] * floor['unique_ids'] / floor['docs_per_s'] for floor, agent in pairs])}")
print(f"  CPU ratio to the floor: {spread([agent['cpu_s'] / floor['cpu_s'] for floor, agent in pairs])}")
EOF
