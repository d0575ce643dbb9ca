#!/bin/bash
# Issue 17: test-time augmentation and committee rows for the `accurate` net with blur jitter (64,128,256,256,
# transformer before conv2): the two seeds of benchmarks/grids/bn48_32px_full_wide_blur.toml, all of them (no
# choice); output: blur_seeds.log.
RUNS=benchmarks/results/bn48-32px-full-wide-blur/runs
exec "$(dirname "$0")/seeds.sh" $RUNS/dd75e7c0c12c $RUNS/fbdf8930a821
