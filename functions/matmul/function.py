"""matmul (FaaSMem, from FunctionBench's matmul): multiply two 1000 x 1000
matrices with numpy (OpenBLAS, with its threads).

Initialisation imports numpy; the handler makes the two matrices from a
fixed seed, multiplies them, spot-checks entries against dot products and
prints a digest of the product.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import hashlib

import numpy as np


N = 1000


@tick_execution_time
def handler():
    rng = np.random.default_rng(1000)
    a = rng.random((N, N))
    b = rng.random((N, N))
    c = a @ b
    for i, j in ((0, 0), (N // 2, N // 3), (N - 1, N - 1)):
        assert abs(c[i, j] - float(np.dot(a[i, :], b[:, j]))) < 1e-9 * N
    print(f"result: {N}x{N}, trace {np.trace(c):.6f}, sha256 {hashlib.sha256(c.tobytes()).hexdigest()[:16]}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
