"""The two routes to LibTV behind one interface; `open_backend` picks the route from the key's prefix."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Mapping, Optional, Tuple

from libtv_fsm.backends.base import Backend, Created, KeyStatus, Message, Task

if TYPE_CHECKING:
    import requests


def open_backend(api_key: str, env: Mapping[str, str] = os.environ,
                 session: Optional["requests.Session"] = None,
                 timeout: Optional[Tuple[float, float]] = None) -> Backend:
    """The backend for ``api_key``'s route (CONTRACT section 1); ConfigError for an unknown prefix."""
    from libtv_fsm import transport
    from libtv_fsm.config import route_for_key
    from libtv_fsm.errors import ConfigError
    from libtv_fsm.results import result_prefixes

    route = route_for_key(api_key, env)
    prefixes = result_prefixes(env.get("LIBTV_EXTRA_RESULT_PREFIXES"))
    session = session if session is not None else transport.new_session()
    if route.auth_mode == "nexu_gateway":
        from libtv_fsm.backends.gateway import GatewayBackend

        return GatewayBackend(api_key, route.base_url, session, prefixes, timeout)
    if route.auth_mode == "libtv_direct":
        from libtv_fsm.backends.direct import DirectBackend

        return DirectBackend(api_key, route.base_url, session, prefixes, timeout)
    raise ConfigError("Invalid API Key format")


__all__ = ["open_backend", "Backend", "Created", "KeyStatus", "Message", "Task"]
