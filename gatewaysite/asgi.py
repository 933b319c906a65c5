"""ASGI entry point, served by uvicorn with uvloop and httptools: the hot path is async end
to end, and uvicorn is the most widely deployed ASGI server with a lifespan protocol (which
the ledger drainer uses to flush on shutdown)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

django_application = get_asgi_application()

from gateway.lifespan import LifespanApp  # noqa: E402  (needs Django set up first)

application = LifespanApp(django_application)
