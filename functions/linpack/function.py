"""linpack (FaaSMem, from FunctionBench's linpack): solve a dense linear
system A x = b with numpy (LAPACK, OpenBLAS with its threads).

Initialisation imports numpy; the handler makes a random 1000 x 1000 system
from a fixed seed, solves it, checks the residual and prints the rate in
MFLOP/s-independent terms (the residual and a digest of x).
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import hashlib

import numpy as np


N = 1000


@tick_execution_time
def handler():
    rng = np.random.default_rng(2000)
    a = rng.random((N, N)) - 0.5
    b = rng.random(N) - 0.5
    x = np.linalg.solve(a, b)
    residual = float(np.linalg.norm(a @ x - b, np.inf) / (np.linalg.norm(a, np.inf) * np.linalg.norm(x, np.inf) * N * np.finfo(float).eps))
    assert residual < 16.0
    print(f"result: n {N}, normalised residual {residual:.3f}, sha256 {hashlib.sha256(x.tobytes()).hexdigest()[:16]}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
