#!/bin/bash
# Issue 17: test-time augmentation and committee rows for the wider `accurate` net without blur jitter (the
# recipe of sessions 17-27; 64,128,256,256, transformer before conv2): the two seeds of
# benchmarks/grids/bn48_32px_full_wide.toml, all of them (no choice); output: wide_seeds.log.
RUNS=benchmarks/results/bn48-32px-full-wide/runs
exec "$(dirname "$0")/seeds.sh" $RUNS/94eaefb8cc12 $RUNS/674c6d601114
