"""The direct LibTV OpenAPI route (`sk-libtv-` keys): `Authorization: Bearer`, bodies wrapped in `{code, message, data}`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from libtv_fsm.backends import base
from libtv_fsm.backends.base import Backend, KeyStatus, Task
from libtv_fsm.backends.upload import check_upload, multipart
from libtv_fsm.errors import PermanentError, UpstreamError
from libtv_fsm.results import read_batch

if TYPE_CHECKING:
    import requests

UPLOAD_PATH = "/openapi/file/upload"
# The older deployment: 404 on UPLOAD_PATH, and the key travels in the `accessKey` form field.
LEGACY_UPLOAD_PATH = "/openapi/upload"


class DirectBackend(Backend):
    auth_mode = "libtv_direct"
    key_prefix = "sk-libtv-"
    session_path = "/openapi/session"

    def auth_headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    def unwrap(self, response: "requests.Response") -> Any:
        doc = self.read_body(response)
        if not 200 <= response.status_code < 300:
            raise base.error_for(response.status_code, base.upstream_text(doc), base.upstream_code(doc))
        if not isinstance(doc, dict):
            base.bad(f"not a JSON object (HTTP {response.status_code})")
        code = doc.get("code")
        if isinstance(code, str) and code.strip().lstrip("-").isdigit():
            code = int(code)
        if isinstance(code, bool) or not isinstance(code, int):
            base.bad("no numeric code")
        if code != 0:
            raise base.error_for(None, base.upstream_text(doc), str(code))
        data = doc.get("data")
        return {} if data is None else data

    def key_status(self) -> KeyStatus:
        raise PermanentError("Key status is only available for mgk_ keys")

    def upload(self, path: Path, progress: Optional[Callable[[int, int], None]] = None) -> str:
        upload = check_upload(path)
        try:
            with multipart(upload, progress=progress) as (body, content_type):
                doc = self.call("POST", UPLOAD_PATH, data=body, headers={"Content-Type": content_type})
        except UpstreamError as err:
            if err.status != 404:
                raise
            with multipart(upload, fields={"accessKey": self._key}, progress=progress) as (body, content_type):
                doc = self.call("POST", LEGACY_UPLOAD_PATH, data=body, headers={"Content-Type": content_type})
        return base.expect_url(base.expect_dict(doc, "the upload"), "url", "the upload")

    def results(self, session_id: str) -> List[str]:
        # No results endpoint on this route: read them from the whole conversation.
        return list(read_batch(self.query_session(session_id), -1, self.prefixes).urls)

    def tasks(self) -> List[Task]:
        raise PermanentError("The task list is only available for mgk_ keys (Nexu gateway)")

    def change_project(self) -> str:
        doc = base.expect_dict(self.call("POST", "/openapi/session/change-project", json={}), "the project")
        return base.expect_id(doc, "projectUuid")
