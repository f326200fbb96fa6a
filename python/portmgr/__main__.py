"""``python -m portmgr`` and the ``portmgr`` console script: the Rust command line.

Both run the same code as the cargo-built ``portmgr`` binary
(``portmgr::cli::main_with_args``), compiled into the extension; nothing is
reimplemented in Python.
"""

from __future__ import annotations

import signal
import sys


def main() -> None:
    """Run the command line with ``sys.argv`` and exit with its status."""
    # The Rust code runs without the GIL and never returns to Python's signal handler:
    # let Ctrl-C end this process the way it ends the cargo binary.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from . import _cli

    sys.stdout.flush()
    sys.exit(_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
