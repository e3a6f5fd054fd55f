"""$OCTO_BENCH_TASKS map tasks that do nothing: the cost of scheduling and durable commits alone."""
import os

source = {i: None for i in range(int(os.environ.get("OCTO_BENCH_TASKS", "20000")))}


def mapfn(key, value):
    return iter(())


def reducefn(key, values):
    return key, len(values)
