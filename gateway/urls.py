from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView

from gateway import budget_api, views
from gateway.inbound import views as inbound
from gateway.probes import HealthzView, MetricsView, ReadyzView

urlpatterns = [
    path("v1/chat/completions", views.ChatCompletionsView.as_view(), name="chat-completions"),
    path("v1/embeddings", views.EmbeddingsView.as_view(), name="embeddings"),
    path("v1/models", views.ModelsView.as_view(), name="models"),
    path("v1/models/<path:model_id>", views.ModelView.as_view(), name="model"),
    path("v1/completions", views.legacy_completions, name="legacy-completions"),
    path("v1/messages", inbound.MessagesView.as_view(), name="messages"),
    path("v1/messages/count_tokens", inbound.CountTokensView.as_view(), name="count-tokens"),
    path("v1/responses", inbound.ResponsesView.as_view(), name="responses"),
    path("v1/budget", budget_api.budget, name="budget"),
    path("healthz", HealthzView.as_view(), name="healthz"),
    path("readyz", ReadyzView.as_view(), name="readyz"),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Last: every other path under /v1/ is a JSON 404 in OpenAI's envelope.
    re_path(r"^v1/", views.unknown_path, name="unknown-api-path"),
]
