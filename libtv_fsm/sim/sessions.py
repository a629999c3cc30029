"""A simulated upstream session: its message history and how each turn progresses per poll."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional

from libtv_fsm.sim.scenarios import Scenario

# A link every assistant reply carries; it is not a result and clients must ignore it.
NON_RESULT_URL = "https://example.com/help"

Message = Dict[str, Any]
# (cdn path, size in bytes) -> public URL; the simulator registers the file on its CDN.
Publish = Callable[[str, int], str]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Turn:
    """One user message and the generation it started."""

    scenario: Scenario
    started_at: float
    user_seq: int
    # Batches of messages still to publish, one batch per poll once results are due.
    steps: List[List[Message]]
    result_urls: List[str]
    polls: int = 0
    clean_polls: int = 0
    released: int = 0
    forced: bool = False
    finished_at: Optional[float] = None

    @property
    def done(self) -> bool:
        return self.released >= len(self.steps)


@dataclass
class SimSession:
    """The upstream's view of one session, shared by the gateway and the direct API."""

    id: str
    project_uuid: str
    created_at: float
    key: str
    messages: List[Message] = field(default_factory=list)
    turns: List[Turn] = field(default_factory=list)
    next_seq: int = 1
    files: int = 0

    @property
    def scenario(self) -> Optional[Scenario]:
        return self.turns[-1].scenario if self.turns else None

    @property
    def polls(self) -> int:
        """GET polls over all turns (fault answers included)."""
        return sum(t.polls for t in self.turns)

    def _append(self, role: str, content: str, now: float) -> Message:
        msg = {"id": f"msg-{uuid.uuid4().hex[:16]}", "seq": self.next_seq, "role": role,
               "content": content, "createdAt": _iso(now)}
        self.next_seq += 1
        self.messages.append(msg)
        return msg

    def add_turn(self, text: str, scenario: Scenario, now: float, publish: Publish) -> Turn:
        """The user's message goes in at once; the generation's messages wait for polls."""
        user = self._append("user", text, now)
        steps, urls = self._script(scenario, publish)
        turn = Turn(scenario=scenario, started_at=now, user_seq=user["seq"], steps=steps, result_urls=urls)
        self.turns.append(turn)
        return turn

    def _file(self, ext: str, size: int, publish: Publish) -> str:
        self.files += 1
        return publish(f"{self.id}/{self.files}.{ext}", size)

    def _script(self, sc: Scenario, publish: Publish) -> "tuple[List[List[Message]], List[str]]":
        """The message batches this turn will publish; seq and id are given on release."""
        if sc.fail:
            batch = [_tool({"task_result": {"status": "failed", "error_message": sc.fail}})]
            if sc.assistant_reply:
                batch.append(_assistant(f"Sorry, the generation failed: {sc.fail}. "
                                        f"See {NON_RESULT_URL} for what is allowed."))
            return [batch], []
        steps: List[List[Message]] = []
        urls: List[str] = []
        for _ in range(sc.intermediate):
            u = self._file("mp4", sc.video_bytes, publish)
            urls.append(u)
            # Intermediate clips come bare, with the other key, so clients read both.
            steps.append([_tool({"task_result": {"videos": [{"url": u}]}})])
        images = [self._file("png", sc.image_bytes, publish) for _ in range(sc.images)]
        videos = [self._file("mp4", sc.video_bytes, publish) for _ in range(sc.videos)]
        urls += images + videos
        result: Dict[str, Any] = {}
        if images:
            result["images"] = [{"previewPath": u} for u in images]
        if videos:
            result["videos"] = [{sc.video_url_key: u} for u in videos]
        final = [_tool({"task_result": result})]
        if sc.assistant_reply:
            shown = " ".join(images + videos) or "(nothing)"
            final.append(_assistant(f"{sc.reply_text} {shown}\nTips: {NON_RESULT_URL}"))
        steps.append(final)
        return steps, urls

    def poll(self, now: float) -> Optional[str]:
        """Advance the current turn by one GET poll; the fault to answer with, if any."""
        if not self.turns:
            return None
        turn = self.turns[-1]
        turn.polls += 1
        sc = turn.scenario
        if turn.forced:
            self._release(turn, len(turn.steps), now)
            return None
        if turn.polls <= len(sc.poll_faults):
            return sc.poll_faults[turn.polls - 1]
        if sc.persistent_fault:
            return sc.persistent_fault
        turn.clean_polls += 1
        if sc.never_finishes:
            return None
        if sc.ready_after_seconds is not None:
            if now - turn.started_at >= sc.ready_after_seconds:
                self._release(turn, len(turn.steps), now)
            return None
        self._release(turn, turn.clean_polls - sc.polls_before_result, now)
        return None

    def _release(self, turn: Turn, upto: int, now: float) -> None:
        while turn.released < min(upto, len(turn.steps)):
            for msg in turn.steps[turn.released]:
                self._append(msg["role"], msg["content"], now)
            turn.released += 1
        if turn.done and turn.finished_at is None:
            turn.finished_at = now

    def force(self) -> None:
        """Publish everything at the next poll, whatever the scenario says."""
        if self.turns:
            self.turns[-1].forced = True

    def after(self, after_seq: Optional[int]) -> List[Message]:
        if after_seq is None:
            return [dict(m) for m in self.messages]
        return [dict(m) for m in self.messages if m["seq"] > after_seq]

    def published_urls(self) -> List[str]:
        """Result URLs already visible in the history, in order, over all turns."""
        out: List[str] = []
        for t in self.turns:
            if t.scenario.fail:
                continue
            # A turn publishes intermediates one per step and the rest with the last step.
            shown = t.result_urls[: t.released] if not t.done else t.result_urls
            out += [u for u in shown if u not in out]
        return out

    def task(self) -> Dict[str, Any]:
        """The gateway's task-list entry for this session."""
        t = self.turns[-1] if self.turns else None
        failed = bool(t and t.scenario.fail and t.done)
        status = "failed" if failed else "completed" if t and t.done else "running"
        videos = [u for u in self.published_urls() if u.endswith(".mp4")]
        return {
            "id": self.id,
            "status": status,
            "backend": "libtv",
            "created_at": _iso(self.created_at),
            "completed_at": _iso(t.finished_at) if t and t.finished_at else None,
            "video_url": videos[-1] if videos else None,
            "error_message": t.scenario.fail if failed and t else None,
        }


def _tool(payload: Dict[str, Any]) -> Message:
    return {"role": "tool", "content": json.dumps(payload)}


def _assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}
