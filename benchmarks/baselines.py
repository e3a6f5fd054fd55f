"""Third-party word-count baselines for benchmarks/wordcount.py: Dask bag, Dask distributed, PySpark.

Each runs the same job as the hand-rolled baseline (words are line.split(), then lower()) and
returns (counts, seconds).  The seconds cover all reading and counting but not the start-up
of a cluster or session, which a user pays once and not per job.  A baseline whose package
(or java) is missing raises Skip; install them with `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from operator import add


class Skip(Exception):
    """The baseline cannot run here; the message says why."""


def _bag(files: list[str]):
    try:
        import dask.bag as db
    except ImportError:
        raise Skip("dask[bag] not installed") from None
    # read_text yields lines, one partition per file
    return db.read_text(files).map(str.split).flatten().map(str.lower).frequencies()


def dask_bag(files: list[str], workers: int) -> tuple[dict[str, int], float]:
    bag = _bag(files)
    # The processes scheduler spawns a fresh pool inside every compute(), so its start-up is
    # timed too: only handing dask a pre-started pool would keep it out, and the usual call doesn't.
    start = time.perf_counter()
    counts = dict(bag.compute(scheduler="processes", num_workers=workers))
    return counts, time.perf_counter() - start


def dask_distributed(files: list[str], workers: int) -> tuple[dict[str, int], float]:
    bag = _bag(files)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise Skip("distributed not installed") from None
    # loopback only, no dashboard (it needs bokeh and a port); workers are up before timing
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(workers)
        start = time.perf_counter()
        counts = dict(bag.compute(scheduler=client))
        return counts, time.perf_counter() - start


def spark(files: list[str], workers: int) -> tuple[dict[str, int], float]:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise Skip("pyspark not installed") from None
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise Skip("java not found")
    # Bind to loopback (Spark otherwise looks up the host's address) and run Python workers
    # with this interpreter.  Both must be set before the JVM starts.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master(f"local[{workers}]").appName("wordcount-baseline")
               .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .getOrCreate())
    try:
        sc = session.sparkContext
        sc.setLogLevel("ERROR")  # the JVM's few start-up lines on stderr come before this can act
        # Python workers start lazily, inside the job, so they are timed like dask's pool.
        start = time.perf_counter()
        counts = (sc.textFile(",".join(files)).flatMap(lambda line: line.split())
                  .map(lambda w: (w.lower(), 1)).reduceByKey(add).collectAsMap())
        return counts, time.perf_counter() - start
    finally:
        session.stop()


# name for --baselines: (label for a given worker count, function)
BASELINES = {
    "dask": (lambda n: f"dask bag (processes, {n} workers)", dask_bag),
    "distributed": (lambda n: f"dask distributed (LocalCluster {n}x1, start-up excluded)", dask_distributed),
    "spark": (lambda n: f"pyspark local[{n}] (start-up excluded)", spark),
}
