"""MITOSIS's function-benchmark wrapper, on mitosis.

A MITOSIS function script (``exp/fork-functions/<app>/function.py``) runs
with at most its import line changed: drop ``sys.path.append("../../common")``
(or leave it, it is harmless) and keep ``from mitosis_wrapper import *``
(``mitosis_wrapper`` is this module under its MITOSIS name)::

    from mitosis_wrapper import *

    @tick_execution_time
    def handler():
        print("hello world")

    @mitosis_bench
    def bench():
        handler()

    if __name__ == '__main__':
        bench()

run as ``python function.py -exclude_execution=0 -handler_id=73 -pin=1 -profile=1 -app_name="json"``.

Flags
-----
Parsed from ``sys.argv`` gflags-style at import: ``-name=value`` or
``--name=value`` (also ``-name value``; a bare ``-name`` sets a boolean,
``-noname`` clears it). Booleans take ``0/1/true/false``. Unknown flags are
ignored; a bad value for a known flag prints a message and exits with 64.
They are exposed as ``FLAGS`` (``FLAGS.handler_id`` ...):

=====================  =========================================  ==========================
flag                   meaning                                    default
=====================  =========================================  ==========================
``handler_id``         the seed id (a string)                     ``"73"``
``pin``                pinned seed: outlives this process         ``0``
``profile``            also print ``MITOSIS_PROFILE <json>`` lines ``0``
``exclude_execution``  0: run the function once more after        ``1``
                       preparing (``parent`` phase)
``app_name``           name in the output lines                   the script's directory name
``run_once``           only the cold run, then exit               ``0``
``working_set``        bytes, for the micro benchmark             ``16777216`` (16 MiB)
``touch_ratio``        percent, for the micro benchmark           ``100``
``hang``               after preparing, sleep until killed        ``0``
``socket``             the local daemon's socket                  ``$MITOSIS_SOCKET`` or
                                                                  ``/run/mitosis/mitosis.sock``
=====================  =========================================  ==========================

Output
------
Every timing line, flushed as soon as it is known, matches
:data:`TIMING_RE`::

    ^\\[(?P<app>[^\\]]+)-(?P<phase>cold|warm|prepare|parent|child|execution)\\] duration: (?P<ms>[0-9]+\\.[0-9]{3}) ms$

``@tick_execution_time`` prints ``[<app>-execution] duration: X ms`` for
every call of the function it decorates.

``@mitosis_bench``, when the decorated function is called:

1. with ``-run_once=1``: calls it once, prints ``[<app>-cold] duration: X ms``
   and exits 0;
2. calls it twice: ``[<app>-cold] ...``, then ``[<app>-warm] ...``;
3. prepares this process as seed ``handler_id`` (pinned with ``-pin=1``),
   timed. In this process it then prints ``[<app>-prepare] duration: X ms``
   and ``[<app>-prepared] id=<handler_id>``; with ``-exclude_execution=0`` it
   calls the function again (``[<app>-parent] ...``); with ``-hang=1`` it
   sleeps until killed (keeping an unpinned seed alive), else it exits 0;
4. in every child resumed from the seed (``mitosis resume --from <host>
   --id <handler_id>`` on any host): calls the function once, prints
   ``[<app>-child] duration: X ms`` and exits 0.

With ``-profile=1`` each phase (cold, warm, prepare, parent, child) is
followed by one line ``MITOSIS_PROFILE <json>``: a JSON object with ``app``,
``phase``, ``ms``, ``pid``, the page faults (``minflt``, ``majflt``) taken
during the phase, and for ``prepare`` the seed (``seed_id``, ``generation``,
``pinned``, ``daemon_prepare_us``, ``mapped_bytes``, ``rss_bytes``, ``vmas``,
``closed_fds``), for ``child`` the child (``seed_id``, ``seed_host``,
``generation``).

When preparing fails (daemon not running, a thread that cannot be captured, ...) a message
``mitosis_wrapper: ...`` goes to stderr and the process exits with the
error's exit code (:attr:`mitosis.MitosisError.exit_code`: 69 when the daemon
is unreachable, 65 when the process cannot be prepared, ...).
"""

import os

import functools
import json
import re
import resource
import signal
import sys
import time

import mitosis

#: The regular expression every timing line matches.
TIMING_RE = re.compile(
    r"^\[(?P<app>[^\]]+)-(?P<phase>cold|warm|prepare|parent|child|execution)\] duration: (?P<ms>[0-9]+\.[0-9]{3}) ms$"
)

_BOOL_FLAGS = ("pin", "profile", "exclude_execution", "run_once", "hang")
_INT_FLAGS = ("working_set", "touch_ratio")
_STR_FLAGS = ("handler_id", "app_name", "socket")


def _default_app_name(argv):
    script = argv[0] if argv and argv[0] not in ("", "-c", "-m") else ""
    name = os.path.basename(os.path.dirname(os.path.abspath(script))) if script else ""
    return name or "function"


class Flags:
    """The wrapper's flags (see the module docstring), as attributes."""

    def __init__(self, argv=None):
        argv = list(sys.argv if argv is None else argv)
        self.handler_id = "73"
        self.pin = 0
        self.profile = 0
        self.exclude_execution = 1
        self.app_name = _default_app_name(argv)
        self.run_once = 0
        self.working_set = 16 << 20
        self.touch_ratio = 100
        self.hang = 0
        self.socket = os.environ.get("MITOSIS_SOCKET") or os.fspath(mitosis.default_socket())
        self._parse(argv[1:])

    def _parse(self, args):
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                break
            if not arg.startswith("-") or arg == "-":
                continue
            body = arg[2:] if arg.startswith("--") else arg[1:]
            name, eq, value = body.partition("=")
            if not eq:
                if name in _BOOL_FLAGS:
                    value = "1"
                elif name.startswith("no") and name[2:] in _BOOL_FLAGS:
                    name, value = name[2:], "0"
                elif name in _INT_FLAGS + _STR_FLAGS and i < len(args):
                    value = args[i]
                    i += 1
                else:
                    continue
            if name in _BOOL_FLAGS:
                setattr(self, name, _parse_bool(name, value))
            elif name in _INT_FLAGS:
                setattr(self, name, _parse_int(name, value))
            elif name in _STR_FLAGS:
                setattr(self, name, value)

    def as_dict(self):
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self):
        return "Flags(%s)" % ", ".join("%s=%r" % kv for kv in self.as_dict().items())


def _bad_flag(name, value, expected):
    sys.stderr.write("mitosis_wrapper: bad value %r for -%s (expected %s)\n" % (value, name, expected))
    sys.stderr.flush()
    raise SystemExit(64)


def _parse_bool(name, value):
    v = value.strip().lower()
    if v in ("1", "true", "t", "yes", "y"):
        return 1
    if v in ("0", "false", "f", "no", "n"):
        return 0
    _bad_flag(name, value, "0, 1, true or false")


def _parse_int(name, value):
    v = value.strip().lower()
    scale = 1
    for suffix, mult in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)):
        if v.endswith(suffix) or v.endswith(suffix + "b"):
            v = v[: -len(suffix + "b")] if v.endswith(suffix + "b") else v[:-1]
            scale = mult
            break
    try:
        n = int(v, 0) * scale
    except ValueError:
        _bad_flag(name, value, "an integer")
    if n < 0:
        _bad_flag(name, value, "a non-negative integer")
    return n


def parse_flags(argv=None):
    """Parses ``argv`` (default ``sys.argv``) into a new :class:`Flags`."""
    return Flags(argv)


#: The flags of this run, parsed from ``sys.argv`` at import.
FLAGS = Flags()


def _print_line(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _timing(phase, ms):
    _print_line("[%s-%s] duration: %.3f ms" % (FLAGS.app_name, phase, ms))


def _faults():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_majflt


def _run_timed(func, args, kwargs):
    """Calls ``func``; returns its result, the milliseconds it took and the faults it took."""
    f0 = _faults()
    t0 = time.perf_counter()
    result = func(*args, **kwargs)
    ms = (time.perf_counter() - t0) * 1000.0
    f1 = _faults()
    return result, ms, (f1[0] - f0[0], f1[1] - f0[1])


def _profile(phase, ms, faults, **extra):
    if not FLAGS.profile:
        return
    record = {"app": FLAGS.app_name, "phase": phase, "ms": round(ms, 3), "pid": os.getpid()}
    if faults is not None:
        record["minflt"], record["majflt"] = faults
    record.update(extra)
    _print_line("MITOSIS_PROFILE " + json.dumps(record, sort_keys=True))


def _phase(phase, func, args, kwargs, **extra):
    result, ms, faults = _run_timed(func, args, kwargs)
    _timing(phase, ms)
    _profile(phase, ms, faults, **extra)
    return result


def _exit(code):
    """Leaves at once, like MITOSIS's wrapper (``os._exit``), output flushed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def tick_execution_time(func):
    """Prints ``[<app>-execution] duration: X ms`` after every call of ``func``."""

    @functools.wraps(func)
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        result = func(*args, **kwargs)
        _timing("execution", (time.perf_counter() - t0) * 1000.0)
        return result

    return timed


def mitosis_bench(func):
    """Runs ``func`` cold, warm, prepares this process as seed
    ``FLAGS.handler_id`` and runs ``func`` once in every resumed child (see
    the module docstring). Calling the decorated function does not return:
    every path ends the process."""

    @functools.wraps(func)
    def bench(*args, **kwargs):
        if FLAGS.run_once:
            _phase("cold", func, args, kwargs)
            _exit(0)
        _phase("cold", func, args, kwargs)
        _phase("warm", func, args, kwargs)

        sys.stdout.flush()
        sys.stderr.flush()
        f0 = _faults()
        t0 = time.perf_counter()
        try:
            me = mitosis.fork_prepare(FLAGS.handler_id, pin=bool(FLAGS.pin), socket=FLAGS.socket)
        except mitosis.MitosisError as e:
            sys.stderr.write(
                "mitosis_wrapper: preparing seed %r with the daemon at %s failed: %s (%s, exit code %d)\n"
                % (FLAGS.handler_id, FLAGS.socket, e, e.kind, e.exit_code)
            )
            _exit(e.exit_code)
        ms = (time.perf_counter() - t0) * 1000.0
        f1 = _faults()

        if me.is_child:
            _phase("child", func, args, kwargs, seed_id=me.seed_id, seed_host=me.seed_host, generation=me.generation)
            _exit(0)

        _timing("prepare", ms)
        _print_line("[%s-prepared] id=%s" % (FLAGS.app_name, me.seed_id))
        _profile(
            "prepare",
            ms,
            (f1[0] - f0[0], f1[1] - f0[1]),
            seed_id=me.seed_id,
            generation=me.generation,
            pinned=me.pinned,
            daemon_prepare_us=me.prepare_us,
            mapped_bytes=me.mapped_bytes,
            rss_bytes=me.rss_bytes,
            vmas=me.vmas,
            closed_fds=[list(fd) for fd in me.closed_fds],
        )
        if not FLAGS.exclude_execution:
            _phase("parent", func, args, kwargs)
        if FLAGS.hang:
            sys.stdout.flush()
            while True:
                signal.pause()
        _exit(0)

    return bench
