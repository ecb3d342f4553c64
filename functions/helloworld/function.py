"""helloworld (MITOSIS): no initialisation; the handler prints one line."""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403


@tick_execution_time
def handler():
    print("result: hello world", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
