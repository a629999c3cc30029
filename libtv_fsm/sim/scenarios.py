"""What a simulated generation does over its polls: the Scenario data and the built-in set."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

from libtv_fsm.sim.faults import FAULTS

# Faults a poll can answer with instead of the session's messages (the list lives with the replies).
POLL_FAULTS = FAULTS

# "[sim:name]" in a user message picks a named scenario, so a CLI subprocess test can choose by text.
TAG_RE = re.compile(r"\[sim:([A-Za-z0-9_+.\-]+)\]")

KIB = 1024
MIB = 1024 * 1024


@dataclass
class Scenario:
    """One simulated generation. Data only; the session turn reads it when the turn starts."""

    # GET polls after creation that bring nothing new before the results appear
    # (polls answered with a fault do not count).
    polls_before_result: int = 1
    # When set, results appear once this many seconds have passed instead (benchmarks).
    ready_after_seconds: Optional[float] = None
    videos: int = 1
    images: int = 0
    # Intermediate clips, each in its own earlier tool message, one per poll; they are results too.
    intermediate: int = 0
    # An assistant message with prose after the last result-bearing tool message.
    assistant_reply: bool = True
    # A tool result that reports this failure instead of results.
    fail: Optional[str] = None
    never_finishes: bool = False
    # Applied to the first polls of the turn, in order; see POLL_FAULTS.
    poll_faults: Tuple[str, ...] = ()
    # Applied to every poll after poll_faults (e.g. a session that is forbidden for good).
    persistent_fault: Optional[str] = None
    hang_seconds: float = 3.0
    video_bytes: int = 64 * KIB
    image_bytes: int = 16 * KIB
    # Which key the tool result uses for a video: upstream sends either.
    video_url_key: str = "previewPath"
    # Free text for the final assistant message (the URL and a non-result link are added).
    reply_text: str = "Here is your result:"

    def __post_init__(self) -> None:
        self.poll_faults = tuple(self.poll_faults)
        unknown = [f for f in (*self.poll_faults, self.persistent_fault) if f and f not in POLL_FAULTS]
        if unknown:
            raise ValueError(f"unknown poll fault(s): {unknown}; known: {sorted(POLL_FAULTS)}")
        if self.video_url_key not in ("previewPath", "url"):
            raise ValueError("video_url_key must be 'previewPath' or 'url'")

    def copy(self, **changes: object) -> "Scenario":
        """A changed copy, so a test can tweak a built-in without touching the shared one."""
        return replace(self, **changes)  # type: ignore[arg-type]


def builtin_scenarios() -> Dict[str, Scenario]:
    """A fresh set of the named scenarios (each Simulator gets its own, so tests may mutate them)."""
    return {
        "video": Scenario(),
        "image": Scenario(videos=0, images=1),
        "image+video": Scenario(videos=1, images=1, video_url_key="url"),
        "intermediate": Scenario(intermediate=2, videos=1),
        "quiet": Scenario(assistant_reply=False),
        "fail": Scenario(videos=0, fail="Content policy violation"),
        # Has a clip so that complete_now() can still publish one.
        "never": Scenario(never_finishes=True),
        "transient": Scenario(poll_faults=("500", "reset", "html")),
        "poll_forbidden": Scenario(persistent_fault="forbidden"),
        "malformed": Scenario(poll_faults=("malformed", "malformed", "malformed")),
        "hang": Scenario(poll_faults=("hang",)),
        "big_video": Scenario(video_bytes=40 * MIB, video_url_key="url"),
        "big_image": Scenario(videos=0, images=1, image_bytes=12 * MIB),
    }


def pick_scenario(text: Optional[str], named: Dict[str, Scenario], fallback: Scenario) -> Scenario:
    """The scenario a message asks for by its "[sim:name]" tag, else the fallback."""
    if text:
        m = TAG_RE.search(text)
        if m and m.group(1) in named:
            return named[m.group(1)]
    return fallback
