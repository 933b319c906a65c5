from django.urls import path

from gateway import views

urlpatterns = [
    path("v1/chat/completions", views.ChatCompletionsView.as_view(), name="chat-completions"),
    path("v1/models", views.ModelsView.as_view(), name="models"),
]
