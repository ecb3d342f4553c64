"""web (FaaSMem's html_server): a web server's cache of 50 saved pages of
4 MiB, each served with its SHA3-512 (its ETag).

The pages are functions/data/web/page-NN.mhtml (MHTML: an HTML document, its
style sheet and its JPEG images, as a browser saves a page in one file),
made by gen_inputs.py with manifest.json, their sizes and SHA3-512 digests.
Initialisation reads the 50 pages (200 MiB) into memory. The handler hashes
every page with SHA3-512, checks each against the manifest and that each is
a whole MHTML document, and prints the count, the bytes and a digest of the
50 digests.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import hashlib
import json
import os


DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
WEB = os.path.join(DATA, 'web')
with open(os.path.join(WEB, 'manifest.json')) as _f:
    MANIFEST = json.load(_f)
PAGES = {}
for _name in sorted(MANIFEST):
    with open(os.path.join(WEB, _name), 'rb') as _f:
        PAGES[_name] = _f.read()


@tick_execution_time
def handler():
    etags = []
    for name, page in PAGES.items():
        etag = hashlib.sha3_512(page).hexdigest()
        assert etag == MANIFEST[name]['sha3_512'] and len(page) == MANIFEST[name]['bytes'], f"{name} is not the page saved"
        assert page.startswith(b'From: <Saved by Blink>\r\n') and page.endswith(b'----\r\n'), f"{name} is no whole MHTML page"
        etags.append(etag)
    digest = hashlib.sha3_512(''.join(etags).encode()).hexdigest()[:16]
    total = sum(len(p) for p in PAGES.values())
    print(f"result: {len(PAGES)} pages, {total} bytes, sha3_512 {digest}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
