"""Structured logs: one JSON object per line, carrying the request id.

The pipeline sets `request_id_var` when it starts a request (`request_id_var.set(call.request_id)`);
being a ContextVar it follows the request's task and anything it awaits, so every log line
written while serving the request names it, with no logger adapters passed around.
Enabled by LOG_FORMAT=json (the default when DEBUG is off); see settings.LOGGING.

Both formatters (`JsonFormatter`, `PlainFormatter`) redact query strings: every
`?name=value&...` in a line keeps its names and loses its values, so a key a client put in
the URL (`?api_key=gw-...`) never reaches the logs, whoever wrote the line (uvicorn's access
log, Django's `django.request`, whose request object prints its full path, or our own).
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

request_id_var: ContextVar[str] = ContextVar("request_id", default="")

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged too.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


# A query parameter's value: after `?name=` or `&name=`, up to the next `&`, `#`, quote,
# backslash (a JSON escape stays whole) or white space.
QUERY_VALUE = re.compile(r"""([?&][^=\s&#"'\\?]{1,100}=)[^&\s#"'\\]+""")


def redact_query_strings(line: str) -> str:
    return QUERY_VALUE.sub(r"\1[REDACTED]", line) if "=" in line else line


class PlainFormatter(logging.Formatter):
    """`logging.Formatter`, with query strings redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_query_strings(super().format(record))


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "request_id"?, "exc_info"?, ...extra}`, with
    query strings redacted."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            line["request_id"] = request_id
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in line:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return redact_query_strings(orjson.dumps(line, default=str).decode())


# The API's answers that are outcomes, recorded in the ledger with their reason: refusals
# (4xx) and the gateway's own upstream verdicts (502 every provider failed, 503 budget
# counters unreachable, 504 deadline). A 500 is a bug and stays an ERROR.
_API_OUTCOMES = frozenset(range(400, 500)) | {502, 503, 504}


class ApiOutcomeFilter(logging.Filter):
    """Lowers Django's `django.request` line for an API outcome to INFO.

    Django logs every 4xx as a WARNING and every 5xx as an ERROR. On /v1 a 429 or a 502 is
    the gateway working as intended, and the ledger already keeps it with its reason; at
    WARNING each one is noise that hides real warnings (223 lines in one operator's run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        path = getattr(request, "path", "") or ""
        if path.startswith("/v1/") and getattr(record, "status_code", 0) in _API_OUTCOMES:
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True
