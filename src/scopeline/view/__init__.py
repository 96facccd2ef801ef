"""``scopeline view``: a local web application for looking at results and curating units by hand.

Browse subjects, sessions and CNMF results; see a result's summary images with its units' contours
(coloured by curation label or by any quality metric), its motion shifts and its provenance; open a
unit for its footprint, C / S / dF/F with zoom, metrics and a clip of the corrected movie at its
strongest events; accept, reject, label and merge with buttons or keys, saved as a new manual curation
on top of the one in use (:func:`scopeline.pipeline.curation.edit`), never overwriting it.

:mod:`scopeline.view.data` reads the database, :mod:`scopeline.view.app` serves it; this module starts
the server.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from typing import Optional

__all__ = ["new_token", "url", "serve", "Running", "start"]


def new_token() -> str:
    """A random access token (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def url(host: str, port: int, token: str, key: Optional[str] = None) -> str:
    """The address to open: ``http://HOST:PORT/?token=...`` (and ``#result=ID`` to open one result)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}/?token={token}" + (f"#result={key}" if key else "")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve(host: str, port: int, token: str, curator: Optional[str] = None) -> None:
    """Serve the view until interrupted (Ctrl-C).

    Parameters
    ----------
    host : str
        Interface to listen on: ``127.0.0.1`` (this machine only) unless the lab decides otherwise.
    port : int
    token : str
        The access token (:func:`new_token`).
    curator : str, optional
        Who saves curations (default SCOPELINE_CURATOR or the login name).
    """
    import uvicorn

    from scopeline.view.app import create_app

    uvicorn.run(create_app(token, curator), host=host, port=port, log_level="warning", access_log=False)


class Running:
    """A view server running in a background thread (tests, benchmarks, notebooks); ``stop()`` ends it.

    Attributes
    ----------
    host, port, token : the server's address and token
    """

    def __init__(self, server, thread, host: str, port: int, token: str):
        self._server, self._thread = server, thread
        self.host, self.port, self.token = host, port, token

    @property
    def base(self) -> str:
        """``http://host:port`` (no token)."""
        return f"http://{self.host}:{self.port}"

    def url(self, key: Optional[str] = None) -> str:
        """The address with the token (:func:`url`)."""
        return url(self.host, self.port, self.token, key)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def start(host: str = "127.0.0.1", port: Optional[int] = None, token: Optional[str] = None,
          curator: Optional[str] = None, timeout: float = 30.0) -> Running:
    """Start the view in a background thread of this process and return once it answers.

    Raises
    ------
    RuntimeError
        If the server has not started within ``timeout`` s.
    """
    import uvicorn

    from scopeline.view.app import create_app

    token = token or new_token()
    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(create_app(token, curator), host=host, port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True, name="scopeline-view")
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - t0 > timeout:
            raise RuntimeError(f"the view did not start on {host}:{port}")
        time.sleep(0.05)
    return Running(server, thread, host, port, token)
