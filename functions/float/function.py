"""float (FaaSMem, from FunctionBench's float_operation): floating-point
arithmetic in the interpreter.

The handler evaluates sin, cos and sqrt of N numbers and prints their sums.
There is no initialisation beyond the interpreter's own.
"""

# First: the wrapper sets OPENBLAS_NUM_THREADS=1 and the like before any
# numerical library loads (only single-threaded processes can be prepared).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import math


N = 1_000_000


@tick_execution_time
def handler():
    s = c = r = 0.0
    for i in range(N):
        s += math.sin(i)
        c += math.cos(i)
        r += math.sqrt(i)
    print(f"result: n {N}, sums {s:.9f} {c:.9f} {r:.6f}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
