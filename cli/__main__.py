"""``python -m pilotfish.cli``: the ``pilotfish`` command, for processes that cannot rely on the
console script being on the PATH (the local node's pods, tests)."""

import sys

from pilotfish.cli.main import main

sys.exit(main())
