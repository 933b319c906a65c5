"""Domain errors, each mapped once to an HTTP status and OpenAI's error envelope."""

from __future__ import annotations

import logging
from typing import Any

from django.http import JsonResponse
from rest_framework import exceptions as drf_exceptions

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """Base of every error the gateway answers a client with."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class ModelNotFound(GatewayError):
    status = 404
    code = "model_not_found"


class BodyTooLarge(GatewayError):
    status = 413
    code = "request_too_large"


class HeadersTooLarge(GatewayError):
    """Past GATEWAY_MAX_HEADERS or GATEWAY_MAX_HEADER_BYTES (gateway.fastpath.asgi.Router)."""

    status = 431
    code = "request_headers_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"


class BudgetExceeded(GatewayError):
    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"
    # The message's figures as data, for the usage record (budgets.services._refusal).
    refusal: dict[str, Any] | None = None


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"
    # Which limit: scope (key or team), metric, limit, key prefix (budgets.ratelimit).
    refusal: dict[str, Any] | None = None


class ProviderRejected(GatewayError):
    """The provider refused the request as the caller's fault (its 4xx), passed on as it was."""

    code = "provider_rejected"

    def __init__(self, message: str, *, status: int, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status if 400 <= status < 500 else 400
        self._body = body

    def body(self) -> dict[str, Any]:
        err = (self._body or {}).get("error")
        if isinstance(err, dict):
            return {
                "error": {
                    "message": str(err.get("message", self.message)),
                    "type": str(err.get("type") or self.type),
                    "param": err.get("param"),
                    "code": err.get("code"),
                }
            }
        return super().body()


class NoProviderAvailable(GatewayError):
    status = 502
    type = "api_error"
    code = "all_providers_failed"


class DeadlineExceeded(GatewayError):
    status = 504
    type = "api_error"
    code = "deadline_exceeded"


class ClientDisconnected(GatewayError):
    """Not sent to anyone: it names what the ledger records for an abandoned request."""

    status = 499
    code = "client_disconnected"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


def error_response(
    error: GatewayError, *, extra_headers: dict[str, str] | None = None
) -> JsonResponse:
    response = JsonResponse(error.body(), status=error.status)
    response["Content-Length"] = str(len(response.content))
    for name, value in {**error.headers, **(extra_headers or {})}.items():
        response[name] = value
    return response


_DRF_MAP: dict[type[drf_exceptions.APIException], type[GatewayError]] = {
    drf_exceptions.ParseError: InvalidRequest,
    drf_exceptions.UnsupportedMediaType: UnsupportedMediaType,
    drf_exceptions.NotAuthenticated: AuthenticationFailed,
    drf_exceptions.AuthenticationFailed: AuthenticationFailed,
    drf_exceptions.PermissionDenied: PermissionDenied,
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> JsonResponse | None:
    """DRF's exception handler: every error in OpenAI's envelope, never an HTML 500 page."""
    if isinstance(exc, GatewayError):
        return error_response(exc)
    for drf_type, ours in _DRF_MAP.items():
        if isinstance(exc, drf_type):
            return error_response(ours(str(exc.detail)))
    if isinstance(exc, drf_exceptions.MethodNotAllowed):
        err = GatewayError(str(exc.detail), code="method_not_allowed")
        err.status = 405
        return error_response(err)
    if isinstance(exc, drf_exceptions.APIException):
        err = GatewayError(str(exc.detail), code=exc.default_code)
        err.status = exc.status_code
        return error_response(err)
    log.exception("unhandled error", exc_info=exc)
    err = GatewayError("The gateway hit an internal error.", code="internal_error")
    err.status = 500
    err.type = "api_error"
    return error_response(err)
