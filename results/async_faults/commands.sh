#!/bin/sh
# The kill loop of benchmarks/studies/async_faults/kill_loop.py (the same loop as run on 2026-12-03, from a scratch copy of it, reformatted since).
# event_304d2c9.txt: code 304d2c9 (stop signal: a multiprocessing.Event), 1000 kills asked: it hung after 420
#   (faulthandler's stack: Event.set() in ForkedRolloutActor.close(), waiting on the lock the killed actor held).
# stop_pipe_5c8f850.txt: the stop pipe (code 5c8f850, before 0a4dce0's select.poll), 1500 kills: all returned.
python benchmarks/studies/async_faults/kill_loop.py 1000 > results/async_faults/event_304d2c9.txt 2>&1
python benchmarks/studies/async_faults/kill_loop.py 1500 > results/async_faults/stop_pipe_5c8f850.txt 2>&1
