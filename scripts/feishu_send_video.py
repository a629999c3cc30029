#!/usr/bin/env python3
"""Send one result URL to one Feishu/Lark chat by hand, exactly as the waiter would deliver it."""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import _skill_folder  # noqa: E402  (beside this script: sys.path and the Python check)

_skill_folder.prepare()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"❌ {message}", flush=True)
        raise SystemExit(2)


def main(argv: Optional[List[str]] = None) -> int:
    parser = _Parser(prog="feishu_send_video.py", description=__doc__)
    parser.add_argument("--url", required=True, help="the result URL (video, image or anything else)")
    parser.add_argument("--chat-id", required=True, help="ou_ (user) or oc_ (group chat) id, optionally user:/chat:")
    parser.add_argument("--session-id", default="manual",
                        help="the session the result belongs to; with the URL it makes the de-duplication key")
    parser.add_argument("--channel", default="feishu", help="channel name (default feishu)")
    args = parser.parse_args(argv)

    for stream in (sys.stdout, sys.stderr):  # the `❌` must survive a C locale or a Windows console
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="replace")

    try:
        from libtv_fsm.channels import get_channel
        from libtv_fsm.delivery import deliver_result
        from libtv_fsm.errors import LibtvError
        from libtv_fsm.transport import new_session
    except ImportError as err:
        print(f"❌ Cannot import libtv_fsm ({err}); run from the skill folder", flush=True)
        return 1

    try:
        http = new_session()
        channel = get_channel(args.channel, os.environ, http)
        channel.check_ready()
        target = channel.normalize_target(args.chat_id)
        with tempfile.TemporaryDirectory(prefix="libtv-send-") as workdir:
            outcome = deliver_result(channel, target, args.session_id, args.url, http=http, workdir=Path(workdir))
    except LibtvError as err:
        print(f"❌ {err}", flush=True)
        return err.exit_code
    except KeyboardInterrupt:
        print("❌ Interrupted", flush=True)
        return 130
    except Exception as err:  # no traceback reaches the user
        if os.environ.get("LIBTV_DEBUG"):
            raise
        print(f"❌ Unexpected error ({type(err).__name__}); set LIBTV_DEBUG=1 for details", flush=True)
        return 1
    print(json.dumps({"channel": channel.name, "chat_id": target, "url": outcome.url, "sent_as": outcome.sent_as,
                      "message_id": outcome.message_id, "note": outcome.note}, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
