"""pilotfish's version, as the distribution declares it (pyproject.toml).

A constant rather than ``importlib.metadata.version("pilotfish")`` for the processes that
watch their memory: ``importlib.metadata`` brings ``email``, ``zipfile`` and ``csv`` with it,
~2 MiB that ztunnel would carry only to put its version in its node metadata.
tests/unit/test_packaging.py checks that the two agree.
"""

VERSION = "0.1.0"
