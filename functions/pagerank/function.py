"""pagerank (MITOSIS): PageRank of a 100,000-vertex Barabasi-Albert graph.

Initialisation imports python-igraph and builds the graph
(Graph.Barabasi(100000, 10), from a fixed seed); the handler computes the
PageRank of every vertex and prints the top vertices and a digest.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import array
import hashlib
import random

import igraph


SIZE = 100000
LIMIT = 10
igraph.set_random_number_generator(random.Random(100000))
GRAPH = igraph.Graph.Barabasi(SIZE, LIMIT)


@tick_execution_time
def handler():
    ranks = GRAPH.pagerank()
    assert len(ranks) == SIZE and abs(sum(ranks) - 1.0) < 1e-6
    top = sorted(range(SIZE), key=lambda v: -ranks[v])[:3]
    digest = hashlib.sha256(array.array('d', ranks).tobytes()).hexdigest()[:16]
    print(f"result: top {', '.join(f'{v}:{ranks[v]:.6f}' for v in top)}, sha256 {digest}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
