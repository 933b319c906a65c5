from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from gateway.spec import spec

        spec()  # compile OpenAI's schema once, at startup, not on the first request

        from gateway import configversion

        configversion.connect()  # every config save bumps the version (gateway/configversion.py)
