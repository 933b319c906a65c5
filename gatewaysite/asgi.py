"""ASGI entry point. Served by uvicorn (uvloop + httptools): the hot path is async end to end."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gatewaysite.settings")

application = get_asgi_application()
