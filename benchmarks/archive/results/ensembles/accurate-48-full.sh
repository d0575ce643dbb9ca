#!/bin/bash
# Test-time augmentation and committee rows for the 48,96,192,192 `accurate` net (transformer before
# conv2): the two seeds of benchmarks/archive/grids/accurate-48-full.toml, all of them (no choice);
# output: accurate-48-full.log. (The log was made before the runs' directories got the ids of what they
# ran; its paths were renamed with them: see benchmarks/README.md. It predates seeds.sh, whose headers
# read "the 2 seeds" for its "the two seeds".)
RUNS=benchmarks/archive/results/accurate-48-full/runs
exec benchmarks/results/ensembles/seeds.sh $RUNS/58b0a500bf24 $RUNS/ab6fd9136d0a
