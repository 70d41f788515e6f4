#!/usr/bin/env bash
# CPU demo before/after: `orchestrate run sweeps/demo.yaml` from worktrees of two commits, alternating, twice each.
#   bash benchmarks/demo_ab.sh BEFORE_COMMIT [AFTER_COMMIT=HEAD]     (uses the .venv of this checkout)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/.venv/bin/activate"
declare -A commits=([before]=$1 [after]=${2:-HEAD})
for name in before after; do
  rm -rf "/tmp/demo-ab-$name" && git -C "$repo" worktree add -f -q "/tmp/demo-ab-$name" "${commits[$name]}"
done
for round in 1 2; do
  for name in before after; do
    start=$(date +%s.%N)
    (cd "/tmp/demo-ab-$name" && PYTHONPATH="/tmp/demo-ab-$name" WANDB_MODE=offline \
      orchestrate run sweeps/demo.yaml --out "/tmp/demo-ab-run-$name-$round" > "/tmp/demo-ab-$name-$round.log" 2>&1)
    echo "$name (${commits[$name]}) round $round: rc=$? $(echo "$(date +%s.%N) - $start" | bc) s"
  done
done
for name in before after; do git -C "$repo" worktree remove --force "/tmp/demo-ab-$name"; done
