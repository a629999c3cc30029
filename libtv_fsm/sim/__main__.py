"""`python -m libtv_fsm.sim [--port N] [--scenario NAME]`: serve the simulator until Ctrl-C."""
from __future__ import annotations

import argparse
import shlex
import sys
import threading
from typing import List, Optional

from libtv_fsm.sim import Simulator


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libtv_fsm.sim",
                                     description="Loopback simulator of LibTV, the Nexu gateway, Feishu and the result CDN.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--scenario", default="video",
                        help="scenario for new sessions unless a message says [sim:NAME] (default: video)")
    parser.add_argument("--polls", type=int, default=None, help="polls before the results appear")
    args = parser.parse_args(argv)

    sim = Simulator(port=args.port)
    if args.scenario not in sim.scenarios:
        parser.error(f"unknown scenario {args.scenario!r}; known: {', '.join(sorted(sim.scenarios))}")
    sim.default_scenario = sim.scenarios[args.scenario]
    if args.polls is not None:
        sim.default_scenario = sim.default_scenario.copy(polls_before_result=args.polls)
    sim.start()
    print(f"libtv-fsm simulator on {sim.url}")
    print("# point the CLI at it:")
    for name, value in sim.env().items():
        print(f"export {name}={shlex.quote(value)}")
    print(f"# keys: {sim.GATEWAY_KEY} (gateway), {sim.DIRECT_KEY} (direct)")
    print(f"# scenarios (tag a message with [sim:NAME]): {', '.join(sorted(sim.scenarios))}")
    print("# Ctrl-C to stop")
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
