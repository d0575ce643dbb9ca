#!/bin/bash
# Test-time augmentation and committee rows for the 64,128,256,256 `accurate` net without blur jitter
# (transformer before conv2): the two seeds of benchmarks/archive/grids/accurate-64-full-seeds.toml,
# all of them (no choice); output: accurate-64-full-seeds.log.
RUNS=benchmarks/archive/results/accurate-64-full-seeds/runs
exec benchmarks/results/ensembles/seeds.sh $RUNS/94eaefb8cc12 $RUNS/674c6d601114
