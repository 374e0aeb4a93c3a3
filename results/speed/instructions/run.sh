#!/bin/sh
# Instruction counts of one Hopper-v5 rollout and update per algorithm (see benchmarks/studies/speed/instructions.py); two at a time.
set -eu
rm -f results/speed/instructions/callgrind.*
for pair in "ppo spo" "ppo_penalty apo"; do
    for algo in $pair; do
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=results/speed/instructions/callgrind.%p \
            .venv/bin/python benchmarks/studies/speed/instructions.py "$algo" > "results/speed/instructions/$algo.log" 2>&1 &
    done
    wait
done
for dump in results/speed/instructions/callgrind.*; do  # drop the dumps at exit (instrumentation off)
    case "${dump##*/callgrind.}" in *.*) ;; *) rm "$dump" ;; esac
done
gzip -f results/speed/instructions/callgrind.*
.venv/bin/python benchmarks/studies/speed/instructions.py --report | tee results/speed/instructions/stdout.txt
