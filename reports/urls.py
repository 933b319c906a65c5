from django.urls import path

from reports import views

app_name = "reports"

urlpatterns = [
    path("", views.page, {"page": "overview"}, name="overview"),
    path("spend/", views.page, {"page": "spend"}, name="spend"),
    path("spend.csv", views.spend_csv, name="spend-csv"),
    path("cache/", views.page, {"page": "cache"}, name="cache"),
    path("providers/", views.page, {"page": "providers"}, name="providers"),
    path("models/", views.page, {"page": "models"}, name="models"),
    path("api/<slug:page>", views.api, name="api"),
]
