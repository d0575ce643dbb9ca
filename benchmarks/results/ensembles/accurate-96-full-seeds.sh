#!/bin/bash
# Test-time augmentation and committee rows for the `accurate` recipe (96,192,384,384, loc-net 96,96,96,
# blur jitter, transformer before conv2): the two seeds of benchmarks/grids/accurate-96-full-seeds.toml,
# all of them (no choice), run once both had finished; output: accurate-96-full-seeds.log.
RUNS=benchmarks/results/accurate-96-full-seeds/runs
exec "$(dirname "$0")/seeds.sh" $RUNS/d6fa613c1e8e $RUNS/507f168e7d9d
