"""The function-instance runtime: ``python -m mitosis.runtime --dir DIR [--prepare-as ID]``.

A worker's ``mitosis daemon`` starts this for a gateway (``StartInstance``):
in a lean container, as the instance user, with stdin and stdout as pipes to
the daemon (the *channel*) and stderr as a third pipe whose end the daemon
keeps for error messages. Nothing else of the daemon's environment is
passed but ``MITOSIS_SOCKET``, ``PATH``, ``HOME=/``, ``LANG`` and
``PYTHONDONTWRITEBYTECODE=1``.

Writing a function directory
----------------------------
A function is a directory holding ``function.py``:

* its module-level code is the function's *initialisation*: imports, loading
  models and data, warming caches. It runs once per instance, before the
  first request (and, in a seed, before the seed is prepared, so that every
  instance forked from the seed starts with it done);
* it defines ``handler``: called once per request, with the request's body
  (``bytes``) if it takes at least one positional parameter, else with no
  argument. It may return anything: a JSON-serialisable value is sent as
  it is, ``bytes`` decoded as UTF-8 (or as ``{"base64": ...}`` when they are
  not UTF-8), anything else as its ``repr()``. What it prints to
  ``sys.stdout`` is captured and sent with the result. If it raises, the
  request fails with the exception's type, message and traceback, and the
  instance goes on serving;
* the module is imported as ``function`` (``__name__ == "function"``), so an
  ``if __name__ == '__main__':`` block does not run; its directory is first
  on ``sys.path`` and the working directory, and ``sys.argv`` is
  ``[<dir>/function.py]``. The MITOSIS suite's functions
  (``from mitosis_wrapper import *``) work unchanged;
* the container's file system is read-only except ``/tmp``.

The answer to a request is UTF-8 JSON ``{"result": ..., "output": "..."}``;
a failure's is the text ``"<ExceptionType>: <message>\\n<traceback>"``.

The channel (see ``mitosis_proto::instance``)
---------------------------------------------
Integers little-endian. Daemon to runtime, per request: ``u32 len`` and
``len`` bytes of body. Runtime to daemon: ``u8 tag, u32 len, len bytes``,
tag ``P`` (a phase: ``runtime``, ``init``, ``prepared:<id>:<generation
hex>``, ``ready``), ``R`` (an answer) or ``E`` (a failure). End of file on
the channel ends the runtime (exit 0).

At start the channel is moved off descriptors 0 and 1: stray output of the
function (``print`` outside a handler, C libraries writing to descriptor 1)
goes to stderr instead of corrupting the channel, and stdin reads
``/dev/null``.

With ``--prepare-as ID`` the runtime, once initialised, prepares itself as
seed ``ID`` on this worker (pinned, memory copied into the daemon so that
the seed outlives this instance) and reports ``prepared``. A child resumed
from that seed (a fork start) continues in the prepare with the resuming
daemon's pipes as its descriptors 0-2: it takes its channel from them the
same way and reports ``ready`` only.
"""

import argparse
import base64
import contextlib
import importlib.util
import inspect
import io
import json
import os
import struct
import sys
import traceback

TAG_PHASE = b"P"
TAG_REPLY = b"R"
TAG_ERROR = b"E"
#: Most bytes of one body, either way (``mitosis_proto::instance::MAX_BODY``).
MAX_BODY = 6 << 20


class Channel:
    """The runtime's end of its pipes to the daemon (unbuffered)."""

    def __init__(self):
        # The channel keeps the pipes under new numbers; 1 becomes stderr and
        # 0 /dev/null, so nothing else reads or writes the channel.
        self.fd_in = os.dup(0)
        self.fd_out = os.dup(1)
        os.dup2(2, 1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)

    def _write_all(self, data):
        view = memoryview(data)
        while view:
            n = os.write(self.fd_out, view)
            view = view[n:]

    def send(self, tag, body):
        if len(body) > MAX_BODY:
            raise ValueError(f"an answer of {len(body)} bytes exceeds the limit of {MAX_BODY}")
        self._write_all(tag + struct.pack("<I", len(body)) + body)

    def phase(self, name):
        self.send(TAG_PHASE, name.encode())

    def _read_exact(self, n):
        """``n`` bytes, or ``None`` at end of file."""
        chunks = []
        while n:
            chunk = os.read(self.fd_in, min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def request(self):
        """The next request's body, or ``None`` when the daemon closed the channel."""
        head = self._read_exact(4)
        if head is None:
            return None
        (n,) = struct.unpack("<I", head)
        if n == 0:
            return b""
        return self._read_exact(n)


def load_function(directory):
    """Imports ``<directory>/function.py`` as module ``function``."""
    path = os.path.join(directory, "function.py")
    sys.argv = [path]
    sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location("function", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["function"] = module
    spec.loader.exec_module(module)
    return module


def takes_body(handler):
    """Whether ``handler`` takes at least one positional parameter."""
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    return any(p.kind in positional for p in params)


def encode_result(value):
    """A handler's return value as something JSON can carry."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError, OverflowError, RecursionError):
        return repr(value)


def call(handler, with_body, body):
    """Runs one request: ``(tag, answer bytes)``."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            value = handler(body) if with_body else handler()
        answer = json.dumps({"result": encode_result(value), "output": captured.getvalue()})
        return TAG_REPLY, answer.encode("utf-8", "surrogatepass")
    except BaseException as e:  # noqa: BLE001: a handler's SystemExit fails its request too
        if isinstance(e, KeyboardInterrupt):
            raise
        text = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        return TAG_ERROR, text.encode("utf-8", "replace")


def serve(chan, handler):
    with_body = takes_body(handler)
    while True:
        body = chan.request()
        if body is None:
            return
        tag, answer = call(handler, with_body, body)
        if len(answer) > MAX_BODY:
            tag, answer = TAG_ERROR, f"the answer of {len(answer)} bytes exceeds the limit of {MAX_BODY}".encode()
        chan.send(tag, answer)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mitosis.runtime", description="A mitosis function instance's runtime.")
    parser.add_argument("--dir", required=True, help="the function's directory (holding function.py)")
    parser.add_argument("--prepare-as", metavar="ID", help="prepare this instance as seed ID once initialised")
    args = parser.parse_args(argv)
    directory = os.path.abspath(args.dir)
    chan = Channel()
    chan.phase("runtime")
    module = load_function(directory)
    handler = getattr(module, "handler", None)
    if not callable(handler):
        print(f"mitosis.runtime: {directory}/function.py defines no handler()", file=sys.stderr, flush=True)
        return 65
    chan.phase("init")
    if args.prepare_as:
        import mitosis

        sys.stdout.flush()
        me = mitosis.fork_prepare(args.prepare_as, pin=True, copy=True)
        if me.is_child:
            # Descriptors 0-2 are the resuming daemon's pipes now.
            chan = Channel()
        else:
            chan.phase(f"prepared:{me.seed_id}:{me.generation:x}")
    chan.phase("ready")
    serve(chan, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
