"""image (MITOSIS): rotate a ~110 KB JPEG by 90, 180 and 270 degrees with
Pillow and save each result.

Initialisation imports Pillow; the handler opens functions/data/image/image.jpg
(made by gen_inputs.py), rotates it three times, saves the rotations as JPEG
into a fresh temporary directory and prints a digest of the saved files.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import hashlib
import os
import shutil
import tempfile

from PIL import Image


DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
IMAGE = os.path.join(DATA, 'image', 'image.jpg')


@tick_execution_time
def handler():
    tmp = tempfile.mkdtemp(prefix='mitosis-image-')
    digest = hashlib.sha256()
    try:
        with Image.open(IMAGE) as img:
            img.load()
            for angle in (90, 180, 270):
                out = os.path.join(tmp, f'rotate-{angle}.jpg')
                rotated = img.rotate(angle, expand=True)
                rotated.save(out, 'JPEG', quality=90)
                want = img.size if angle == 180 else img.size[::-1]
                assert rotated.size == want
                with open(out, 'rb') as f:
                    digest.update(f.read())
            size = img.size
    finally:
        shutil.rmtree(tmp)
    print(f"result: {size[0]}x{size[1]} rotated 3 times, sha256 {digest.hexdigest()[:16]}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
