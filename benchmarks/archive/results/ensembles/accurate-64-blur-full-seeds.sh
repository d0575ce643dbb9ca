#!/bin/bash
# Test-time augmentation and committee rows for the 64,128,256,256 `accurate` net with blur jitter
# (transformer before conv2): the two seeds of benchmarks/archive/grids/accurate-64-blur-full-seeds.toml,
# all of them (no choice); output: accurate-64-blur-full-seeds.log.
RUNS=benchmarks/archive/results/accurate-64-blur-full-seeds/runs
exec benchmarks/results/ensembles/seeds.sh $RUNS/dd75e7c0c12c $RUNS/fbdf8930a821
