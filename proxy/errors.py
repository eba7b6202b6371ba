"""Every error a client sees, in the OpenAI error shape, with ``x-should-retry``.

Our own errors (``policies.ApiError``) know their status and body; litestar's own
(404 route, 405 method, 413 body too large) and anything unexpected are converted
here, so no response ever leaves the proxy in another shape.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from policies import ApiError, InternalError, InvalidRequest, NotFound, RequestTooLarge

__all__ = ["api_error_response", "error_handlers", "to_api_error"]

logger = logging.getLogger(__name__)


def to_api_error(exc: Exception) -> ApiError:
    """Our error for any exception (a bug becomes a 500 that names no internals)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HTTPException):
        status = exc.status_code
        if status == 413:
            return RequestTooLarge(
                "request body too large; send a smaller body or raise server.max_body_bytes"
            )
        if status == 404:
            return NotFound(
                "no such endpoint; the proxy serves POST /v1/chat/completions, GET /v1/models, "
                "/metrics, /healthz and /readyz",
                code="not_found",
            )
        if status == 405:
            return InvalidRequest(f"method not allowed: {exc.detail}", status_code=405)
        return ApiError(str(exc.detail), status_code=status)
    logger.exception("unexpected error", exc_info=exc)
    return InternalError("internal error in the proxy; see its log")


def api_error_response(error: ApiError, headers: dict[str, str] | None = None) -> Response[bytes]:
    """The HTTP response for ``error``: OpenAI body, its status, retry headers."""
    all_headers = error.headers()
    if headers:
        all_headers.update(headers)
    return Response(
        msgspec.json.encode(error.to_body()),
        status_code=error.status_code,
        media_type="application/json",
        headers=all_headers,
    )


def _handle(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return api_error_response(to_api_error(exc))


error_handlers: ExceptionHandlersMap = {Exception: _handle}
