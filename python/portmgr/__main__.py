"""``python -m portmgr`` and the ``portmgr`` console script: the Rust command line.

Both run the same code as the cargo-built ``portmgr`` binary (``portmgr::cli``),
compiled into the extension; nothing is reimplemented in Python.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run the command line with ``sys.argv`` and exit with its status."""
    from . import _cli

    sys.exit(_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
