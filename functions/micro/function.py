"""micro (MITOSIS): a working set of anonymous memory.

Initialisation maps -working_set bytes (default 16 MiB) of anonymous memory
and writes a byte into every page; the handler reads one byte from each of
the first -touch_ratio percent (default 100) of the pages and prints their
sum, which it checks against what initialisation wrote.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import mmap


PAGE = mmap.PAGESIZE
PAGES = int(FLAGS.working_set) // PAGE
BUF = mmap.mmap(-1, PAGES * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
VIEW = memoryview(BUF)
for _page in range(PAGES):
    BUF[_page * PAGE] = (_page * 7 + 1) & 0xFF
TOUCHED = PAGES * int(FLAGS.touch_ratio) // 100
EXPECTED = sum((p * 7 + 1) & 0xFF for p in range(TOUCHED))


@tick_execution_time
def handler():
    total = sum(VIEW[0:TOUCHED * PAGE:PAGE])
    assert total == EXPECTED
    print(f"result: touched {TOUCHED} of {PAGES} pages, sum {total}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
