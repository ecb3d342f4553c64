"""gzip (FaaSMem, from FunctionBench's gzip_compression): gzip a 1 MiB file
of random bytes.

The input is functions/data/gzip/input.bin (made by gen_inputs.py). The
handler compresses it into a fresh temporary directory, decompresses the
result to check it, and prints the sizes and a digest of the compressed file.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import gzip
import hashlib
import os
import shutil
import tempfile


DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
INPUT = os.path.join(DATA, 'gzip', 'input.bin')


@tick_execution_time
def handler():
    tmp = tempfile.mkdtemp(prefix='mitosis-gzip-')
    try:
        out = os.path.join(tmp, 'input.bin.gz')
        with open(INPUT, 'rb') as src, open(out, 'wb') as raw:
            # mtime=0 and no file name: the output depends on the input only.
            with gzip.GzipFile(filename='', mode='wb', fileobj=raw, mtime=0) as dst:
                shutil.copyfileobj(src, dst)
        with open(out, 'rb') as f:
            compressed = f.read()
        with open(INPUT, 'rb') as f:
            assert gzip.decompress(compressed) == f.read()
    finally:
        shutil.rmtree(tmp)
    digest = hashlib.sha256(compressed).hexdigest()[:16]
    print(f"result: {os.path.getsize(INPUT)} -> {len(compressed)} bytes, sha256 {digest}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
