"""The Nexu gateway route (`mgk_` keys): plain JSON bodies, `X-API-KEY`, errors as `error.user_message`."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional

from libtv_fsm.backends import base
from libtv_fsm.backends.base import Backend, KeyStatus, Task
from libtv_fsm.backends.upload import check_upload, multipart
from libtv_fsm.ids import validate_session_id
from libtv_fsm.results import is_result_url

if TYPE_CHECKING:
    import requests


class GatewayBackend(Backend):
    auth_mode = "nexu_gateway"
    key_prefix = "mgk_"
    session_path = "/libtv/v1/session"

    def auth_headers(self) -> Dict[str, str]:
        return {"X-API-KEY": self._key}

    def unwrap(self, response: "requests.Response") -> Any:
        doc = self.read_body(response)
        if not 200 <= response.status_code < 300:
            raise base.error_for(response.status_code, base.upstream_text(doc), base.upstream_code(doc))
        if doc is None:
            base.bad(f"not JSON (HTTP {response.status_code})")
        # A gateway that answers 200 with an error object still means no.
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            raise base.error_for(response.status_code, base.upstream_text(doc), base.upstream_code(doc))
        return doc

    def key_status(self) -> KeyStatus:
        return base.parse_key_status(self.call("GET", "/api/v1/key/status"))

    def upload(self, path: Path, progress: Optional[Callable[[int, int], None]] = None) -> str:
        upload = check_upload(path)
        with multipart(upload, progress=progress) as (body, content_type):
            doc = self.call("POST", "/libtv/v1/upload", data=body, headers={"Content-Type": content_type})
        return base.expect_url(base.expect_dict(doc, "the upload"), "url", "the upload")

    def project_url(self, doc: Mapping[str, Any], project: str) -> str:
        url = doc.get("projectUrl")
        if isinstance(url, str) and url.startswith("https://") and not any(c.isspace() for c in url):
            return url
        return base.canvas_url(project)

    def results(self, session_id: str) -> List[str]:
        sid = validate_session_id(session_id)
        doc = base.expect_dict(self.call("GET", f"/libtv/v1/session/{sid}/results"), "the results")
        urls = doc.get("urls")
        if not isinstance(urls, list):
            base.bad("results has no urls list")
        found: List[str] = []
        for url in urls:
            if is_result_url(url, self.prefixes) and url not in found:
                found.append(url)
        return found

    def tasks(self) -> List[Task]:
        doc = base.expect_dict(self.call("GET", "/api/v1/tasks"), "the task list")
        tasks = doc.get("tasks")
        if tasks is None:
            return []
        if not isinstance(tasks, list):
            base.bad("tasks is not a list")
        return [base.parse_task(item) for item in tasks]

    def change_project(self) -> str:
        doc = base.expect_dict(self.call("POST", "/libtv/v1/session/change-project", json={}), "the project")
        return base.expect_id(doc, "projectUuid")
