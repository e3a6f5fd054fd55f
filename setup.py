"""The one compiled piece: the map side's run-length counts (octostore/worker/_keycounts.c).

Everything else is in pyproject.toml.  The extension is optional: where it does
not build (no C compiler), installation goes on and mapside.py uses its
pure-Python path, which gives the same results ~28% slower on the map side.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("octostore.worker._keycounts", ["octostore/worker/_keycounts.c"], optional=True),
    Extension("octostore.worker._buckets", ["octostore/worker/_buckets.c"], optional=True),
    Extension("octostore._blocklayout", ["octostore/_blocklayout.c"], optional=True),
])
