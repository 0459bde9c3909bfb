"""How long a brute-force image search takes: one query against 10,000 and 100,000 indexed vectors.

    python bench/embeddings.py            # 10,000 and 100,000 vectors of 1,280 values (Lite0's bottleneck)
    python bench/embeddings.py --quick    # 1,000 and 10,000: a fast check

The search is the course's own (``tlcourse.search.nearest``, what ``python -m tlcourse.search``
and ``SearchIndex.query`` run): every query against every indexed vector, a matrix product in
numpy, then the top 5. The vectors are random unit vectors: the time of a brute-force search does
not depend on what they hold. Each figure is the median of several repeats, for one query at a time
(what a user waits for) and for a batch of 100 queries (per query). A closing line extrapolates
linearly from the largest size to the index size at which one query takes 100 ms. A shared machine
slows every figure: the load average is recorded beside them.

Writes bench/results/embeddings.{json,md} (``--quick``: embeddings_quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tlcourse import search  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DIMENSIONS = 1280  # EfficientNet-Lite0's bottleneck
TOP_K = 5
BATCH = 100
REPEATS = 15
INTERACTIVE_MS = 100.0
# Chosen from the PyPI package list (well kept: a release in 2026-09, among the 1,000 most downloaded); not installed.
APPROXIMATE_INDEX = (
    "`faiss-cpu` (PyPI; Meta's FAISS), an HNSW or IVF index over the same unit vectors, "
    "where the inner product is the cosine similarity"
)  # a search a person waits for should answer well within this


def median_seconds(function, repeats: int = REPEATS) -> float:
    function()  # warm-up: first-touch of memory, BLAS threads
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def measure(size: int, rng: np.random.Generator) -> dict:
    index = search.normalize(rng.normal(size=(size, DIMENSIONS)).astype(np.float32))
    queries = search.normalize(rng.normal(size=(BATCH, DIMENSIONS)).astype(np.float32))
    one = median_seconds(lambda: search.nearest(queries[:1], index, TOP_K, normalized=True))
    batch = median_seconds(lambda: search.nearest(queries, index, TOP_K, normalized=True), repeats=5)
    return {
        "vectors": size,
        "index_mb": index.nbytes / 1e6,
        "one_query_ms": one * 1e3,
        "batch_per_query_ms": batch * 1e3 / BATCH,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 vectors")
    args = parser.parse_args()
    sizes = (1_000, 10_000) if args.quick else (10_000, 100_000)
    rng = np.random.default_rng(0)
    rows = [measure(size, rng) for size in sizes]
    largest = rows[-1]
    at_limit = int(largest["vectors"] * INTERACTIVE_MS / largest["one_query_ms"])
    summary = {
        "command": "python bench/embeddings.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "numpy": np.__version__,
        "dimensions": DIMENSIONS,
        "top_k": TOP_K,
        "rows": rows,
        "vectors_at_100_ms_extrapolated": at_limit,
        "date": time.strftime("%Y-%m-%d"),
        "load_average_1_min": os.getloadavg()[0],  # 2 means both cores busy with other work
    }
    name = "embeddings_quick" if args.quick else "embeddings"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# Brute-force image search: query time",
        "",
        f"`{summary['command']}` on {summary['date']} ({summary['machine']}, numpy {np.__version__}); "
        f"1-minute load average {summary['load_average_1_min']:.1f} at the end; "
        f"{DIMENSIONS}-value unit vectors, top {TOP_K}, `tlcourse.search.nearest` on a normalised index "
        "(as `SearchIndex.query` runs it); medians of repeats.",
        "",
        "| indexed vectors | index in memory | one query | per query, in batches of 100 |",
        "| ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {row['vectors']:,} | {row['index_mb']:,.0f} MB | {row['one_query_ms']:.1f} ms "
        f"| {row['batch_per_query_ms']:.2f} ms |"
        for row in rows
    ]
    lines += [
        "",
        f"Brute force grows linearly with the index: extrapolated from {largest['vectors']:,} vectors, one query "
        f"would take {INTERACTIVE_MS:.0f} ms at about {at_limit:,} vectors (an estimate, not a measurement), "
        f"and the index would hold {at_limit * DIMENSIONS * 4 / 1e9:.1f} GB of float32.",
        "",
        f"Past that size, or for many queries a second, use an approximate index: {APPROXIMATE_INDEX}.",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
