"""Generates every input file of the function suite under functions/data/.

Run by scripts/setup-functions with the suite's venv (it needs Pillow and
numpy). Everything is made here, from fixed seeds: no function downloads
anything at run time. The output is deterministic for given package versions,
and a stamp file makes a second run with nothing to do return at once.

    python functions/gen_inputs.py [--data DIR] [--force]
"""

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Bump when the inputs change in a way the source hash would not show.
FORMAT = 1
# Fixed modification time of the compression input (2020-01-01 00:00 UTC),
# so that the archive a handler makes does not depend on when setup ran.
FIXED_MTIME = 1577836800


def stamp_text():
    """What the stamp records: the format, this file's hash, the packages."""
    import numpy
    import PIL

    source = open(os.path.abspath(__file__), "rb").read()
    return json.dumps(
        {
            "format": FORMAT,
            "generator_sha256": hashlib.sha256(source).hexdigest(),
            "numpy": numpy.__version__,
            "pillow": PIL.__version__,
        },
        sort_keys=True,
    )


# ------------------------------------------------------------------ json --

WORDS = (
    "mm fs net sched kvm arm64 x86 drm usb pci block crypto bpf io_uring ext4 btrfs xfs nfs "
    "fix add remove refactor handle avoid use allow introduce rework update correct check "
    "the a of for in when on with without race leak lock page fault memory buffer queue "
    "driver device error return path state table entry list tree cache map range limit"
).split()


def sentence(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def make_json(path):
    """~150 KB: a list of commits of a source tree (what MITOSIS's
    linux.json holds), with nested authors, parents and touched files."""
    rng = random.Random(0x150)
    people = [
        {"name": f"{rng.choice(['Ann', 'Bo', 'Cy', 'Di', 'Ed', 'Flo', 'Gus'])} {sentence(rng, 1, 1).title()}",
         "email": f"dev{i}@example.org"}
        for i in range(40)
    ]
    commits = []
    size = 0
    i = 0
    while size < 128_000:
        sha = hashlib.sha1(f"commit-{i}".encode()).hexdigest()
        author = rng.choice(people)
        commit = {
            "sha": sha,
            "commit": {
                "author": {**author, "date": f"2023-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                           f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"},
                "committer": rng.choice(people),
                "message": f"{rng.choice(WORDS)}: {sentence(rng, 4, 12)}\n\n{sentence(rng, 10, 40)}",
                "comment_count": rng.randint(0, 5),
                "verification": {"verified": rng.random() < 0.3, "reason": "unsigned"},
            },
            "parents": [{"sha": hashlib.sha1(f"commit-{i - 1 - k}".encode()).hexdigest()} for k in range(rng.randint(1, 2))],
            "stats": {"additions": rng.randint(0, 500), "deletions": rng.randint(0, 300)},
            "files": [f"{rng.choice(WORDS)}/{rng.choice(WORDS)}_{rng.randint(0, 99)}.c" for _ in range(rng.randint(1, 4))],
            "score": round(rng.uniform(0, 1), 6),
        }
        commits.append(commit)
        size += len(json.dumps(commit))
        i += 1
    with open(path, "w") as f:
        json.dump(commits, f, indent=1)


# ----------------------------------------------------------- compression --

def make_compression_dir(root):
    """A small source-like tree (~300 KB): text files of varying
    compressibility in a few subdirectories, with fixed mtimes."""
    rng = random.Random(0xC0)
    for d in ("src", "src/core", "docs", "data"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for n in range(24):
        d = ("src", "src/core", "docs", "data")[n % 4]
        lines = []
        for _ in range(rng.randint(80, 260)):
            if d == "data":
                lines.append(",".join(str(rng.randint(0, 99999)) for _ in range(8)))
            else:
                lines.append(f"{'    ' * rng.randint(0, 3)}{sentence(rng, 3, 12)}")
        with open(os.path.join(root, d, f"file{n:02d}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (FIXED_MTIME, FIXED_MTIME))
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))


# ----------------------------------------------------------------- images --

def synthetic_photo(width, height, seed):
    """An RGB image with the structure of a photo (smooth light, shapes,
    texture, sensor noise) so that JPEG sizes are realistic."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            120 + 80 * np.sin(x / width * 3.1 + 0.5) * np.cos(y / height * 2.3),
            110 + 70 * np.cos(x / width * 1.7 - y / height * 2.9),
            100 + 90 * np.sin((x + y) / (width + height) * 4.2 + 1.0),
        ],
        axis=-1,
    )
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(width // 60, width // 8))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
        else:
            draw.rectangle([x0 - r, y0 - r // 2, x0 + r, y0 + r // 2], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(radius=max(1, width // 400)))
    noise = rng.normal(0, 9, (height, width, 3))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def save_jpeg_near(img, path, target_bytes):
    """Saves `img` as JPEG with the quality whose size is nearest `target_bytes`."""
    best = None
    for quality in range(30, 99, 4):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        size = buf.tell()
        if best is None or abs(size - target_bytes) < abs(best[0] - target_bytes):
            best = (size, buf.getvalue())
    with open(path, "wb") as f:
        f.write(best[1])


# -------------------------------------------------------------------- web --

WEB_PAGES = 50
WEB_PAGE_BYTES = 4 << 20
# Fixed date of the saved pages (the FIXED_MTIME instant).
WEB_DATE = "Wed, 1 Jan 2020 00:00:00 -0000"


def mhtml_part(boundary, headers, body):
    """One part of a multipart/related MHTML document (CRLF line ends)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return f"--{boundary}\r\n{head}\r\n".encode() + body + b"\r\n"


def base64_lines(data):
    """Base64 in lines of 76 characters, as MIME wants."""
    import base64

    text = base64.b64encode(data)
    return b"\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))


def make_web_page(n, rng, images):
    """Page `n`: a web page saved as MHTML (what a browser's "save page as
    a single file" writes): an HTML document (quoted-printable), its style
    sheet and the JPEG images it shows (base64), exactly WEB_PAGE_BYTES long."""
    import binascii

    site = "https://www.example.org"
    boundary = f"----MultipartBoundary--{hashlib.sha1(f'page-{n}'.encode()).hexdigest()[:40]}----"
    url = f"{site}/articles/{n:02d}.html"
    css = "\n".join(
        f".{rng.choice(WORDS)}-{i} {{ margin: {rng.randint(0, 24)}px; color: #{rng.randrange(1 << 24):06x};"
        f" font-size: {rng.randint(10, 32)}px; }}"
        for i in range(1500)
    ).encode()
    shown = rng.sample(range(len(images)), 8)
    parts = [mhtml_part(boundary, [("Content-Type", "text/css"), ("Content-Transfer-Encoding", "quoted-printable"),
                                   ("Content-Location", f"{site}/static/site.css")], binascii.b2a_qp(css).replace(b"\n", b"\r\n"))]
    for i in shown:
        parts.append(mhtml_part(boundary, [("Content-Type", "image/jpeg"), ("Content-Transfer-Encoding", "base64"),
                                           ("Content-Location", f"{site}/media/photo-{i:02d}.jpg")], base64_lines(images[i])))
    # The HTML fills the page up to its size, less a margin that the
    # Subject line takes up exactly.
    closing = f"--{boundary}--\r\n".encode()
    html_headers = [("Content-Type", "text/html"), ("Content-ID", f"<frame-{n:02d}@mhtml.blink>"),
                    ("Content-Transfer-Encoding", "quoted-printable"), ("Content-Location", url)]
    fixed = sum(len(p) for p in parts) + len(closing) + len(mhtml_part(boundary, html_headers, b""))
    budget = WEB_PAGE_BYTES - fixed - 600  # the top headers and the Subject's margin
    paragraphs = [f"<html><head><title>Article {n}</title><link rel=\"stylesheet\" href=\"{site}/static/site.css\">"
                  "</head><body>"]
    encoded_estimate = 0
    while encoded_estimate < budget - 2000:
        kind = rng.random()
        if kind < 0.1:
            p = f"<h2>{' '.join(rng.choices(WORDS, k=rng.randint(3, 8)))}</h2>"
        elif kind < 0.2:
            i = rng.choice(shown)
            p = f"<figure><img src=\"{site}/media/photo-{i:02d}.jpg\"><figcaption>{' '.join(rng.choices(WORDS, k=6))}</figcaption></figure>"
        else:
            p = f"<p class=\"{rng.choice(WORDS)}-{rng.randrange(1500)}\">{' '.join(rng.choices(WORDS, k=rng.randint(40, 160)))}.</p>"
        paragraphs.append(p)
        # Quoted-printable adds a soft line break ("=" CRLF) per 75 characters.
        encoded_estimate += len(p) + 1 + 3 * (len(p) // 75 + 1)
    top = ("From: <Saved by Blink>\r\n"
           f"Snapshot-Content-Location: {url}\r\n"
           "Subject: {subject}\r\n"
           f"Date: {WEB_DATE}\r\n"
           "MIME-Version: 1.0\r\n"
           "Content-Type: multipart/related;\r\n"
           "\ttype=\"text/html\";\r\n"
           f"\tboundary=\"{boundary}\"\r\n\r\n\r\n")

    def room_left():
        """Encodes the page as it is; the bytes left for the Subject."""
        html = binascii.b2a_qp("\n".join(paragraphs + ["</body></html>"]).encode()).replace(b"\n", b"\r\n")
        body = mhtml_part(boundary, html_headers, html) + b"".join(parts) + closing
        return WEB_PAGE_BYTES - len(body) - len(top.format(subject="")), body

    room, body = room_left()
    while not 20 <= room <= 400:
        if room < 20:
            paragraphs.pop()
        else:
            paragraphs.append(f"<p>{' '.join(rng.choices(WORDS, k=max(1, (room - 200) // 7)))}.</p>")
        room, body = room_left()
    subject = f"Article {n}: " + " ".join(rng.choices(WORDS, k=200))
    page = top.format(subject=subject[:room]).encode() + body
    assert len(page) == WEB_PAGE_BYTES
    return page


def make_web(root):
    """WEB_PAGES pages of WEB_PAGE_BYTES of MHTML (page-NN.mhtml) and
    manifest.json: each page's size and SHA3-512."""
    rng = random.Random(0x3EB)
    images = []
    for i in range(12):
        width = rng.choice((960, 1024, 1152))
        buf = io.BytesIO()
        synthetic_photo(width, width * 3 // 4, 0x3EB0 + i).save(buf, "JPEG", quality=92)
        images.append(buf.getvalue())
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    manifest = {}
    for n in range(WEB_PAGES):
        page = make_web_page(n, rng, images)
        name = f"page-{n:02d}.mhtml"
        with open(os.path.join(root, name), "wb") as f:
            f.write(page)
        manifest[name] = {"bytes": len(page), "sha3_512": hashlib.sha3_512(page).hexdigest()}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


# ------------------------------------------------------------------ main --

def generate(data):
    os.makedirs(data, exist_ok=True)
    os.makedirs(os.path.join(data, "json"), exist_ok=True)
    make_json(os.path.join(data, "json", "linux.json"))

    comp = os.path.join(data, "compression", "input")
    shutil.rmtree(comp, ignore_errors=True)
    make_compression_dir(comp)

    os.makedirs(os.path.join(data, "image"), exist_ok=True)
    save_jpeg_near(synthetic_photo(640, 480, 0x1A), os.path.join(data, "image", "image.jpg"), 110_000)

    os.makedirs(os.path.join(data, "recognition"), exist_ok=True)
    save_jpeg_near(synthetic_photo(2048, 1536, 0x2B), os.path.join(data, "recognition", "image.jpg"), 2_000_000)

    os.makedirs(os.path.join(data, "gzip"), exist_ok=True)
    with open(os.path.join(data, "gzip", "input.bin"), "wb") as f:
        f.write(random.Random(0x6A).randbytes(1 << 20))

    make_web(os.path.join(data, "web"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(HERE, "data"))
    parser.add_argument("--force", action="store_true", help="regenerate even when the stamp matches")
    args = parser.parse_args()
    stamp_path = os.path.join(args.data, ".stamp")
    want = stamp_text()
    if not args.force and os.path.exists(stamp_path) and open(stamp_path).read() == want:
        print(f"gen_inputs: {args.data} is up to date")
        return 0
    if os.path.exists(stamp_path):
        os.remove(stamp_path)
    generate(args.data)
    with open(stamp_path, "w") as f:
        f.write(want)
    total = sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(args.data) for n in ns)
    print(f"gen_inputs: wrote {total / 1e6:.1f} MB of inputs to {args.data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
