"""`python -m libtv_fsm`: the skill's command line."""
import sys

from libtv_fsm.cli import main

sys.exit(main())
