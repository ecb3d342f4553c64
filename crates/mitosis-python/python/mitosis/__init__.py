"""mitosis: fast remote fork for Python programs.

A warm process *prepares* itself as a seed with the daemon of its host; any
host can then start *children* that continue from exactly that point, their
memory fetched lazily from the seed's host::

    import mitosis

    state = build_expensive_state()
    me = mitosis.fork_prepare("my-fn", pin=True)
    if me.is_child:
        # a child, resumed on some host as pid me.pid
        serve_one_request(state)
    else:
        # the original process: the seed is ready (me.seed_id, me.generation)
        ...

Functions (``socket`` is the local daemon's socket; default
``$MITOSIS_SOCKET`` or ``/run/mitosis/mitosis.sock``):

``fork_prepare(id, pin=False, socket=None, copy=False)``
    Prepares the calling process (every thread; it may be called from any
    of them) as seed ``id``.
    Returns a :class:`Parent` in the caller and a :class:`Child` in every
    child resumed from the seed; both have ``is_child``. An unpinned seed is
    dropped when the preparing process exits, a pinned one stays until
    :func:`drop`. With ``copy=True`` the daemon keeps a copy of the memory
    instead of a snapshot process (which would die with this process's
    container). ``sys.stdout`` and ``sys.stderr`` are flushed first, so
    children do not print the parent's buffered output again.
``fork_resume(host, id, socket=None)``
    Replaces the calling process by a child of seed ``id`` from the daemon at
    ``host`` (``"addr:port"``). Does not return on success.
``resume(host, id, socket=None, *, container=True)``
    Starts a child as a new process on this host with the caller's stdin,
    stdout and stderr, in a lean container unless ``container=False`` (as
    ``mitosis resume [--no-container]``); returns a :class:`Resumed`
    (``.pid``, ``.container``, ``.wait()``).
``drop(id, socket=None)``
    Drops seed ``id`` on this host.
``seeds(socket=None)``
    This host's seeds, as a list of dicts.

What children share with their parent, and what not:

* everything in memory as of the prepare point, including Python's buffers
  (which is why ``fork_prepare`` flushes ``sys.stdout``/``sys.stderr``; data
  already read ahead into ``sys.stdin``'s buffer is in every child too);
* but not the random-number state, as after ``os.fork()``: ``fork_prepare``
  runs the interpreter's fork machinery, so hooks registered with
  ``os.register_at_fork`` run (``before`` and ``after_in_parent`` in the
  parent, ``after_in_child`` in every child) and :mod:`random` reseeds
  itself in each child; OpenSSL's generator gets fresh entropy there when
  :mod:`ssl` is loaded. Generators without such a hook (your own
  ``random.Random()``, numpy's) keep the seed's state: register one
  (``os.register_at_fork(after_in_child=...)``);
* not sockets, pipes and the like: they are closed in children
  (``Parent.closed_fds`` lists them); descriptors 0-2 are the resumer's.

The seed's snapshot is a stopped copy of the preparing process, in its
process group: SIGKILL sent to that whole group (``kill -9 -PGID``) kills the
snapshot too, and the seed's children then die for lack of pages.

Known limit: ``fork_resume`` from a process running the same executable as
the seed (a Python process resuming a Python seed) is killed by the daemon
during the takeover (``PR_SET_MM_MAP`` fails with EBUSY in the daemon's
restore step); ``mitosis resume --in-place`` and :func:`resume` work.

Errors are :class:`MitosisError` subclasses (see :mod:`mitosis.errors`), with
``.kind`` and ``.exit_code`` (the ``mitosis`` command's exit status for the
same failure).

:mod:`mitosis.wrapper` (also importable as ``mitosis_wrapper``) runs MITOSIS's
function benchmarks unchanged: ``@tick_execution_time`` and ``@mitosis_bench``.
"""

from mitosis._native import (
    Child,
    Parent,
    Resumed,
    __version__,
    default_socket,
    drop,
    fork_prepare,
    fork_resume,
    resume,
    seeds,
)
from mitosis.errors import (
    AuthFailed,
    BadRequest,
    Busy,
    ConnectionLost,
    DaemonUnreachable,
    InternalError,
    MitosisError,
    PermissionDenied,
    SeedGone,
    SeedNotFound,
    Unavailable,
    Unsupported,
    UsageError,
    VersionMismatch,
)

from mitosis import errors as _errors

__all__ = [
    "__version__",
    "fork_prepare",
    "fork_resume",
    "resume",
    "drop",
    "seeds",
    "default_socket",
    "Parent",
    "Child",
    "Resumed",
] + _errors.__all__
