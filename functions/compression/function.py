"""compression (MITOSIS): zip a directory with shutil.make_archive.

The input directory is functions/data/compression/input (made by
gen_inputs.py, fixed modification times). The handler archives it into a
fresh temporary directory, checks the archive and prints a digest of its
entries (names, CRCs and sizes), then removes the temporary directory.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import hashlib
import os
import shutil
import tempfile
import zipfile


DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
INPUT = os.path.join(DATA, 'compression', 'input')


@tick_execution_time
def handler():
    tmp = tempfile.mkdtemp(prefix='mitosis-compression-')
    try:
        archive = shutil.make_archive(os.path.join(tmp, 'archive'), 'zip', root_dir=INPUT)
        with zipfile.ZipFile(archive) as z:
            assert z.testzip() is None
            entries = [(i.filename, i.CRC, i.file_size, i.compress_size) for i in z.infolist()]
        size = os.path.getsize(archive)
    finally:
        shutil.rmtree(tmp)
    digest = hashlib.sha256(repr(entries).encode()).hexdigest()[:16]
    print(f"result: {len(entries)} entries, {size} bytes, sha256 {digest}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
