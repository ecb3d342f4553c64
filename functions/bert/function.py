"""bert (FaaSMem): a BERT-base forward pass in numpy, with random weights.

FaaSMem runs Hugging Face's BertModel (torch) built from a BertConfig with
random weights. Here the same network is written in numpy (OpenBLAS, with
its threads), built from the same configuration: 12 layers, hidden size 768,
12 attention heads, intermediate size 3072 (GELU), vocabulary 30522, 512
positions, 2 token types, layer-norm epsilon 1e-12, and a tanh pooler. Its
109.5 M float32 parameters (438 MB) are initialised as BertModel initialises
them (weights normal with standard deviation 0.02, biases zero, layer-norm
gains one) from a fixed seed; nothing is downloaded.

Initialisation imports numpy, builds the weights and a sequence of 128 token
ids ([CLS] ... [SEP], seeded). The handler runs the encoder over the
sequence (embeddings, 12 layers of self-attention and feed-forward, pooler),
checks its first layer for the first token against a float64 reference
written head by head, checks the layer-norm invariants of the output, and
prints the output's shape and a digest of the hidden states and the pooled
vector.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import hashlib
import math

import numpy as np


# BertConfig's defaults: BERT-base.
LAYERS = 12
HIDDEN = 768
HEADS = 12
INTERMEDIATE = 3072
VOCAB = 30522
POSITIONS = 512
TYPES = 2
LN_EPS = 1e-12
INIT_STD = 0.02
SEQ = 128
CLS, SEP = 101, 102


def gelu(x):
    """BERT's exact GELU, 0.5 x (1 + erf(x / sqrt 2)), on float32."""
    return x * (np.float32(0.5) * (np.float32(1) + erf(x * np.float32(1 / math.sqrt(2)))))


# Abramowitz and Stegun 7.1.26: |error| < 1.5e-7, float32's own precision.
_P = np.float32(0.3275911)
_A = [np.float32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)]


def erf(x):
    """erf of a float32 array (numpy has none)."""
    a = np.abs(x)
    t = np.float32(1) / (np.float32(1) + _P * a)
    poly = _A[0]
    for c in _A[1:]:
        poly = poly * t + c
    y = np.float32(1) - poly * t * np.exp(-a * a)
    return np.copysign(y, x)


def layer_norm(x, gain, bias):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LN_EPS) * gain + bias


class Layer:
    def __init__(self, rng, hidden, intermediate):
        def dense(n_in, n_out):
            w = rng.standard_normal((n_in, n_out), dtype=np.float32)
            w *= np.float32(INIT_STD)
            return w, np.zeros(n_out, np.float32)
        self.q, self.q_b = dense(hidden, hidden)
        self.k, self.k_b = dense(hidden, hidden)
        self.v, self.v_b = dense(hidden, hidden)
        self.o, self.o_b = dense(hidden, hidden)
        self.ln1 = (np.ones(hidden, np.float32), np.zeros(hidden, np.float32))
        self.up, self.up_b = dense(hidden, intermediate)
        self.down, self.down_b = dense(intermediate, hidden)
        self.ln2 = (np.ones(hidden, np.float32), np.zeros(hidden, np.float32))

    def arrays(self):
        return [self.q, self.q_b, self.k, self.k_b, self.v, self.v_b, self.o, self.o_b, *self.ln1,
                self.up, self.up_b, self.down, self.down_b, *self.ln2]


class Bert:
    def __init__(self, seed, layers, hidden, heads, intermediate):
        assert hidden % heads == 0
        self.hidden, self.heads = hidden, heads
        rng = np.random.default_rng(seed)

        def table(rows):
            t = rng.standard_normal((rows, hidden), dtype=np.float32)
            t *= np.float32(INIT_STD)
            return t
        self.words = table(VOCAB)
        self.words[0] = 0  # BertModel zeroes the padding token's embedding
        self.positions = table(POSITIONS)
        self.types = table(TYPES)
        self.ln = (np.ones(hidden, np.float32), np.zeros(hidden, np.float32))
        self.layers = [Layer(rng, hidden, intermediate) for _ in range(layers)]
        self.pool = rng.standard_normal((hidden, hidden), dtype=np.float32)
        self.pool *= np.float32(INIT_STD)
        self.pool_b = np.zeros(hidden, np.float32)

    def arrays(self):
        return [self.words, self.positions, self.types, *self.ln, self.pool, self.pool_b] + \
            [a for layer in self.layers for a in layer.arrays()]

    def embed(self, ids):
        x = self.words[ids] + self.positions[:len(ids)] + self.types[0]
        return layer_norm(x, *self.ln)

    def attention(self, layer, x):
        n, d, h = x.shape[0], self.hidden, self.heads
        dh = d // h
        q = (x @ layer.q + layer.q_b).reshape(n, h, dh).transpose(1, 0, 2)
        k = (x @ layer.k + layer.k_b).reshape(n, h, dh).transpose(1, 2, 0)
        v = (x @ layer.v + layer.v_b).reshape(n, h, dh).transpose(1, 0, 2)
        scores = q @ k * np.float32(1 / math.sqrt(dh))          # (h, n, n)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(1, 0, 2).reshape(n, d)  # (n, d)
        return context @ layer.o + layer.o_b

    def layer(self, layer, x):
        x = layer_norm(x + self.attention(layer, x), *layer.ln1)
        return layer_norm(x + gelu(x @ layer.up + layer.up_b) @ layer.down + layer.down_b, *layer.ln2)

    def __call__(self, ids):
        """ids: (n,) int -> hidden states (n, hidden), pooled (hidden,),
        and the first layer's output (for the reference check)."""
        x = self.embed(ids)
        first = None
        for i, layer in enumerate(self.layers):
            x = self.layer(layer, x)
            if i == 0:
                first = x.copy()
        pooled = np.tanh(x[0] @ self.pool + self.pool_b)
        return x, pooled, first


def reference_first_token(model, ids):
    """The first layer's output for token 0, in float64, one head at a time
    with explicit sums (no reshapes shared with the model)."""
    f = np.float64
    emb = model.words[ids].astype(f) + model.positions[:len(ids)].astype(f) + model.types[0].astype(f)
    mean = emb.mean(axis=1, keepdims=True)
    emb = (emb - mean) / np.sqrt(((emb - mean) ** 2).mean(axis=1, keepdims=True) + LN_EPS)
    emb = emb * model.ln[0] + model.ln[1]
    L = model.layers[0]
    dh = model.hidden // model.heads
    keys = emb @ L.k.astype(f) + L.k_b
    values = emb @ L.v.astype(f) + L.v_b
    query = emb[0] @ L.q.astype(f) + L.q_b
    context = np.empty(model.hidden)
    for head in range(model.heads):
        cols = slice(head * dh, (head + 1) * dh)
        scores = np.array([np.dot(query[cols], keys[t, cols]) for t in range(len(ids))]) / math.sqrt(dh)
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        context[cols] = weights @ values[:, cols]
    y = emb[0] + context @ L.o.astype(f) + L.o_b
    y = (y - y.mean()) / math.sqrt(((y - y.mean()) ** 2).mean() + LN_EPS) * L.ln1[0] + L.ln1[1]
    pre = y @ L.up.astype(f) + L.up_b
    act = np.array([0.5 * u * (1 + math.erf(u / math.sqrt(2))) for u in pre])
    z = y + act @ L.down.astype(f) + L.down_b
    return (z - z.mean()) / math.sqrt(((z - z.mean()) ** 2).mean() + LN_EPS) * L.ln2[0] + L.ln2[1]


MODEL = Bert(seed=768, layers=LAYERS, hidden=HIDDEN, heads=HEADS, intermediate=INTERMEDIATE)
PARAMETERS = sum(a.size for a in MODEL.arrays())
_ids = np.random.default_rng(30522).integers(1000, VOCAB, SEQ)
_ids[0], _ids[-1] = CLS, SEP
IDS = _ids


@tick_execution_time
def handler():
    hidden, pooled, first = MODEL(IDS)
    assert hidden.shape == (SEQ, MODEL.hidden) and hidden.dtype == np.float32
    assert np.all(np.isfinite(hidden)) and np.all(np.abs(pooled) < 1)
    # Layer norm with unit gains and zero biases: every token's state has
    # mean 0 and variance 1.
    assert np.abs(hidden.mean(axis=1)).max() < 1e-4 and np.abs(hidden.var(axis=1) - 1).max() < 1e-3
    reference = reference_first_token(MODEL, IDS)
    err = np.abs(first[0] - reference).max()
    assert err < 1e-4, f"first layer, token 0: float32 differs from the float64 reference by {err}"
    digest = hashlib.sha256(hidden.tobytes() + pooled.tobytes()).hexdigest()[:16]
    print(f"result: {len(MODEL.layers)} layers, {PARAMETERS} parameters, "
          f"{SEQ}x{MODEL.hidden} states, pooled[0] {pooled[0]:.6f}, sha256 {digest}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
