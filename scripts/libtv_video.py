#!/usr/bin/env python3
"""The skill's command line, runnable as a plain script from the skill folder."""
import os
import sys

_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _extra in (os.path.join(_root, "vendor"), _root):
    if os.path.isdir(_extra) and _extra not in sys.path:
        sys.path.insert(0, _extra)

from libtv_fsm.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
