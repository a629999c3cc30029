#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = [
#     "transitions>=0.9.0",
#     "attrs>=23.1.0",
#     "cattrs>=23.2.0",
#     "requests>=2.31.0",
#     "urllib3>=1.26.0",
#     "filelock>=3.12.0",
#     "tenacity>=8.3",
#     "requests-toolbelt>=1.0.0",
#     "multipart>=1.1",
# ]
# ///
"""The skill's command line, runnable as a plain script from the skill folder (or with `uv run` from a checkout)."""
import os
import sys

import _skill_folder  # noqa: E402  (beside this script: sys.path and the Python check)

# The gateway this skill folder sends `mgk_` keys to when LIBTV_GATEWAY_URL is not set. Nexu's
# troubleshooting guide has the agent "update the libtv-video skill's gateway address" by editing
# this line, so it is honoured here (and by the worker and waiters this command starts).
GATEWAY_URL = "https://seedance.nexu.io/"

if not os.environ.get("LIBTV_GATEWAY_URL", "").strip():
    os.environ["LIBTV_GATEWAY_URL"] = GATEWAY_URL
_skill_folder.prepare()

from libtv_fsm.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
