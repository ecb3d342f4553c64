"""graph (FaaSMem's graph_bfs): breadth-first search of a 100,000-vertex
Barabasi-Albert graph with 5 million edges.

Initialisation imports python-igraph and builds the graph
(Graph.Barabasi(100000, 50), from a fixed seed: about 290 MB). The handler
runs a breadth-first search from vertex 0, checks it (every vertex reached;
each vertex's depth equals its distance from igraph's own shortest-path
search; each vertex's BFS parent is a neighbour one level up) and prints the
level sizes and a digest of the visit order and the parents.
"""

# The wrapper first: its flags, timing lines and prepare (mitosis_wrapper).
from mitosis_wrapper import *  # noqa: E402,F401,F403

import array
import hashlib
import random

import igraph


SIZE = 100000
EDGES_PER_VERTEX = 50
ROOT = 0
igraph.set_random_number_generator(random.Random(100000))
GRAPH = igraph.Graph.Barabasi(SIZE, EDGES_PER_VERTEX)


@tick_execution_time
def handler():
    order, starts, parents = GRAPH.bfs(ROOT)
    assert len(order) == SIZE and sorted(order) == list(range(SIZE)), "not every vertex was reached once"
    levels = [starts[i + 1] - starts[i] for i in range(len(starts) - 1)]
    depth = [0] * SIZE
    for level in range(len(levels)):
        for v in order[starts[level]:starts[level + 1]]:
            depth[v] = level
    assert depth == GRAPH.distances(source=[ROOT])[0], "BFS levels differ from shortest-path distances"
    assert parents[ROOT] in (-1, ROOT)  # -1 in igraph 1.0, the root itself before
    tree = [(parents[v], v) for v in order[1:]]
    assert all(depth[p] == depth[v] - 1 for p, v in tree), "a parent is not one level up"
    GRAPH.get_eids(pairs=tree)  # raises when a parent is not a neighbour
    digest = hashlib.sha256(array.array('q', order).tobytes() + array.array('q', parents).tobytes()).hexdigest()[:16]
    print(f"result: {GRAPH.vcount()} vertices, {GRAPH.ecount()} edges, levels {levels}, sha256 {digest}", flush=True)


@mitosis_bench
def bench():
    handler()


if __name__ == '__main__':
    bench()
