"""ASGI entry point, served by uvicorn with uvloop and httptools: the hot path is async end
to end, and uvicorn is the most widely deployed ASGI server with a lifespan protocol (which
the ledger drainer uses to flush on shutdown)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

django_application = get_asgi_application()

# Imported once Django is set up.
from gateway.asgi_api import ApiHandler, Router  # noqa: E402
from gateway.lifespan import LifespanApp  # noqa: E402

http_application = Router(api=ApiHandler(), site=django_application)
application = LifespanApp(http_application)
