"""recognition (MITOSIS): image classification with a ResNet-50 in numpy.

MITOSIS runs torchvision's ResNet-50 with random weights on a 2 MB JPEG.
Here the same network (bottleneck blocks [3, 4, 6, 3], 25.6 M parameters,
1000 classes) is written in numpy, with convolutions as im2col matrix
products on OpenBLAS (with its threads), and its weights are fixed seeded
random numbers: He-initialised convolutions and batch-norm statistics that
initialisation folds into the convolutions, as an inference engine does.

Initialisation imports numpy and Pillow, builds the network (about 100 MB
of float32 weights) and decodes the image (functions/data/recognition/
image.jpg, made by gen_inputs.py). The handler resizes (shorter side 256),
center-crops (224 x 224) and normalises the image, runs the network,
applies softmax and prints the top-5 classes and a digest of the logits.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import hashlib
import os

import numpy as np
from PIL import Image


DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data')
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CLASSES = 1000
BN_EPS = 1e-5


class Conv:
    """A convolution with its batch norm folded in (weights as a matrix
    of shape (k * k * cin, cout) for the im2col product)."""

    def __init__(self, rng, cin, cout, k, stride=1, residual_end=False):
        self.k, self.stride, self.pad = k, stride, k // 2
        fan_in = cin * k * k
        w = rng.standard_normal((k, k, cin, cout), dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        # Batch-norm parameters and running statistics, folded into w and b.
        gamma = rng.uniform(0.1, 0.3 if residual_end else 1.0, cout).astype(np.float32)
        beta = rng.uniform(-0.1, 0.1, cout).astype(np.float32)
        mean = rng.uniform(-0.05, 0.05, cout).astype(np.float32)
        var = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        scale = gamma / np.sqrt(var + BN_EPS)
        self.w = np.ascontiguousarray((w * scale).reshape(k * k * cin, cout))
        self.b = (beta - mean * scale).astype(np.float32)

    def __call__(self, x):
        """x: (h, w, cin) float32 -> (h', w', cout)."""
        k, s, p = self.k, self.stride, self.pad
        if k == 1:
            if s > 1:
                x = x[::s, ::s, :]
            h, w, c = x.shape
            cols = x.reshape(h * w, c)
        else:
            x = np.pad(x, ((p, p), (p, p), (0, 0)))
            hp, wp, c = x.shape
            h, w = (hp - k) // s + 1, (wp - k) // s + 1
            sh, sw, sc = x.strides
            patches = np.lib.stride_tricks.as_strided(x, (h, w, k, k, c), (sh * s, sw * s, sh, sw, sc), writeable=False)
            cols = patches.reshape(h * w, k * k * c)
        return (cols @ self.w + self.b).reshape(h, w, -1)


def relu(x):
    return np.maximum(x, 0, out=x)


class Bottleneck:
    def __init__(self, rng, cin, width, stride):
        cout = width * 4
        self.conv1 = Conv(rng, cin, width, 1)
        self.conv2 = Conv(rng, width, width, 3, stride)
        self.conv3 = Conv(rng, width, cout, 1, residual_end=True)
        self.down = Conv(rng, cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def __call__(self, x):
        out = relu(self.conv1(x))
        out = relu(self.conv2(out))
        out = self.conv3(out)
        out += self.down(x) if self.down else x
        return relu(out)


class ResNet50:
    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.stem = Conv(rng, 3, 64, 7, 2)
        self.blocks = []
        cin = 64
        for width, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(count):
                self.blocks.append(Bottleneck(rng, cin, width, stride if i == 0 else 1))
                cin = width * 4
        bound = 1.0 / np.sqrt(cin)
        self.fc_w = rng.uniform(-bound, bound, (cin, CLASSES)).astype(np.float32)
        self.fc_b = rng.uniform(-bound, bound, CLASSES).astype(np.float32)

    def parameters(self):
        convs = [self.stem] + [c for b in self.blocks for c in (b.conv1, b.conv2, b.conv3, b.down) if c]
        return sum(c.w.size + c.b.size for c in convs) + self.fc_w.size + self.fc_b.size

    def __call__(self, x):
        x = relu(self.stem(x))
        x = max_pool_3x3_s2(x)
        for block in self.blocks:
            x = block(x)
        return x.mean(axis=(0, 1)) @ self.fc_w + self.fc_b


def max_pool_3x3_s2(x):
    x = np.pad(x, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    hp, wp, c = x.shape
    h, w = (hp - 3) // 2 + 1, (wp - 3) // 2 + 1
    sh, sw, sc = x.strides
    windows = np.lib.stride_tricks.as_strided(x, (h, w, 3, 3, c), (sh * 2, sw * 2, sh, sw, sc), writeable=False)
    return windows.max(axis=(2, 3))


def preprocess(img):
    """Resize (shorter side 256), center crop 224, scale to [0, 1], normalise."""
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = np.asarray(img, dtype=np.float32) / 255.0
    return (x - MEAN) / STD


MODEL = ResNet50(seed=50)
with Image.open(os.path.join(DATA, 'recognition', 'image.jpg')) as _img:
    IMAGE = _img.convert('RGB')


@tick_execution_time
def handler():
    x = preprocess(IMAGE)
    logits = MODEL(x).astype(np.float64)
    e = np.exp(logits - logits.max())
    probs = e / e.sum()
    assert np.all(np.isfinite(probs)) and abs(probs.sum() - 1.0) < 1e-9
    top5 = np.argsort(-probs)[:5]
    digest = hashlib.sha256(logits.tobytes()).hexdigest()[:16]
    print(f"result: top-5 {', '.join(f'{c}:{probs[c]:.4f}' for c in top5)}, sha256 {digest}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
