"""float (FaaSMem, from FunctionBench's float_operation): floating-point
arithmetic in the interpreter.

The handler evaluates sin, cos and sqrt of N numbers and prints their sums.
There is no initialisation beyond the interpreter's own.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
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
