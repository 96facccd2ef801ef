"""The web application of ``scopeline view``: a JSON API over :mod:`scopeline.view.data` and one page.

Built on FastAPI (Starlette underneath; served by uvicorn): typed routes, JSON errors and static files
with little code, and both are widely used and maintained. The page draws images and contours on an
HTML canvas and the traces with Plotly.js (WebGL lines: 20,000 frames zoom and pan smoothly), served
from the ``plotly`` Python package's own copy, so nothing is fetched from the internet.

Every request needs the access token: ``?token=...`` once (the page then keeps it in an HttpOnly,
SameSite=Strict cookie and drops it from the address bar), the cookie, or an ``X-Scopeline-Token``
header. Without it the server answers 403 and reads nothing.
"""

from __future__ import annotations

import base64
import secrets
from importlib import resources
from pathlib import Path
from typing import Optional

from fastapi import Body, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from scopeline.view import data

__all__ = ["create_app", "COOKIE", "HEADER"]

COOKIE = "scopeline_token"
HEADER = "x-scopeline-token"
_STATIC = Path(str(resources.files("scopeline.view") / "static"))


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def create_app(token: str, curator: Optional[str] = None) -> FastAPI:
    """The view's application.

    Parameters
    ----------
    token : str
        The access token every request must carry.
    curator : str, optional
        Who saves curations from this view (default SCOPELINE_CURATOR or the login name).

    Returns
    -------
    fastapi.FastAPI
    """
    app = FastAPI(title="scopeline view", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def need_token(request: Request, call_next):
        given = request.query_params.get("token") or request.headers.get(HEADER) or request.cookies.get(COOKIE)
        if not given or not secrets.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "no valid access token: open the URL `scopeline view` printed"},
                                status_code=403)
        if "token" in request.query_params and request.url.path == "/":
            reply = RedirectResponse("/", status_code=303)  # the token leaves the address bar and history
            reply.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return reply
        return await call_next(request)

    @app.exception_handler(data.ViewError)
    async def view_error(request: Request, err: data.ViewError):
        return JSONResponse({"error": str(err)}, status_code=409 if isinstance(err, data.Conflict) else 400)

    @app.get("/")
    def index():
        return FileResponse(_STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}")
    def static(name: str):
        path = _plotly_js() if name == "plotly.min.js" else _STATIC / name
        if path.parent not in (_STATIC, _plotly_js().parent) or not path.is_file():
            return JSONResponse({"error": f"no file {name}"}, status_code=404)
        return FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/results")
    def results():
        return {"results": data.results()}

    @app.get("/api/result/{rid}")
    def result(rid: str):  # read afresh: another person or worker may have changed it since
        return data.open_result(rid, reload=True).summary()

    @app.get("/api/result/{rid}/image/{name}.png")
    def image(rid: str, name: str):
        return Response(data.open_result(rid).image_png(name), media_type="image/png",
                        headers={"Cache-Control": "max-age=600"})

    @app.get("/api/result/{rid}/motion")
    def motion_shifts(rid: str):
        return data.open_result(rid).motion_json()

    @app.get("/api/result/{rid}/provenance")
    def provenance(rid: str):
        return data.open_result(rid).provenance()

    @app.get("/api/result/{rid}/unit/{unit_id}")
    def unit(rid: str, unit_id: int):
        return data.open_result(rid).unit_json(unit_id)

    @app.get("/api/result/{rid}/unit/{unit_id}/clip")
    def clip(rid: str, unit_id: int):
        png, meta = data.open_result(rid).clip(unit_id)
        return {**meta, "png": "data:image/png;base64," + base64.b64encode(png).decode()}

    @app.post("/api/result/{rid}/curation")
    def save(rid: str, body: dict = Body(...)):
        res = data.open_result(rid)
        cid = res.save(body.get("change") or {}, body.get("parent"), body.get("curator") or curator)
        data.open_result(rid, reload=True)
        return {"curation_id": cid}

    return app
