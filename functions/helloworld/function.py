"""helloworld (MITOSIS): no initialisation; the handler prints one line."""

# First: the wrapper sets OPENBLAS_NUM_THREADS=1 and the like before any
# numerical library loads (only single-threaded processes can be prepared).
from mitosis_wrapper import *  # noqa: E402,F401,F403


@tick_execution_time
def handler():
    print("result: hello world", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
