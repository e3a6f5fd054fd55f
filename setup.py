"""The compiled pieces: three loops that run once per pair or once per distinct key.

Everything else is in pyproject.toml.  Each extension is optional: where it does
not build (no C compiler), installation goes on and the Python beside it runs
instead, with the same results; the word count's map side then takes ~1.5x
the time (docs/performance.md, section 1).
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("octostore.worker._keycounts", ["octostore/worker/_keycounts.c"], optional=True),
    Extension("octostore.worker._buckets", ["octostore/worker/_buckets.c"], optional=True),
    Extension("octostore._blocklayout", ["octostore/_blocklayout.c"], optional=True),
])
