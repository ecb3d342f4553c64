"""What a child of ``fork_prepare`` reseeds beyond the interpreter's hooks.

``mitosis.fork_prepare`` runs CPython's fork machinery around the prepare, so
in every child the hooks registered with
``os.register_at_fork(after_in_child=...)`` run, as after ``os.fork()``:
:mod:`random` reseeds its global generator from one of them. Then it calls
:func:`after_fork_prepare`, for what has no such hook.

OpenSSL (1.1.1 and 3.x) reseeds its generators by itself when it runs under
another pid than before, which is how it notices a ``fork()``. A mitosis child
usually has another pid than its seed, but not always: pids are reused, so
a child started after its pinned seed's process is gone can get that
process's pid (and every such child then generates the seed's bytes). So
fresh kernel entropy is mixed in here, in every child, when Python's OpenSSL
binding (``_ssl``, which ``ssl`` imports) is loaded. When it is not, Python code has not used
OpenSSL's generator. (A library with its own copy of OpenSSL, such as the
``cryptography`` wheels, is not reached: reseed it from an at-fork hook.)
"""

import os
import sys


def after_fork_prepare(threaded=False):
    """Called by ``fork_prepare`` in every child, after the at-fork hooks.

    ``threaded``: the seed had several threads, which all go on in the child,
    so the interpreter ran its *parent* at-fork hooks (its child hooks assume
    that only the calling thread survived a fork): :mod:`random`'s reseeding
    hook did not run, and runs here.
    """
    if threaded:
        random = sys.modules.get("random")
        if random is not None:
            random.seed()
    _ssl = sys.modules.get("_ssl")
    if _ssl is not None and hasattr(_ssl, "RAND_add"):
        # RAND_add reseeds OpenSSL's primary generator with these bytes; the
        # per-thread generators reseed from it on their next use.
        _ssl.RAND_add(os.urandom(32), 32.0)
