#!/bin/bash
# Issue 17: test-time augmentation and committee rows for the `accurate` net at 96,192,384,384 (loc-net
# 96,96,96, blur jitter, transformer before conv2): the two seeds of benchmarks/grids/bn48_32px_full_wider.toml,
# all of them (no choice), run once both have finished; output: wider_seeds.log.
RUNS=benchmarks/results/bn48-32px-full-wider/runs
exec "$(dirname "$0")/seeds.sh" $RUNS/d6fa613c1e8e $RUNS/507f168e7d9d
