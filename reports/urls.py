from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from reports import views

app_name = "reports"

# Managers sign in here (LOGIN_URL), in the dashboards' style; the admin keeps its own login.
# Failed attempts on both forms count against the same limit (gateway/loginguard.py).
account_urls = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="reports/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="reports:login"), name="logout"),
    path(
        "password/",
        auth_views.PasswordChangeView.as_view(
            template_name="reports/password_change.html",
            success_url=reverse_lazy("reports:password-change-done"),
        ),
        name="password-change",
    ),
    path(
        "password/done/",
        auth_views.PasswordChangeDoneView.as_view(
            template_name="reports/password_change_done.html"
        ),
        name="password-change-done",
    ),
]

urlpatterns = [
    *account_urls,
    path("", views.page, {"page": "overview"}, name="overview"),
    path("spend/", views.page, {"page": "spend"}, name="spend"),
    path("spend.csv", views.spend_csv, name="spend-csv"),
    path("cache/", views.page, {"page": "cache"}, name="cache"),
    path("providers/", views.page, {"page": "providers"}, name="providers"),
    path("models/", views.page, {"page": "models"}, name="models"),
    path("availability/", views.page, {"page": "availability"}, name="availability"),
    path("incidents/", views.page, {"page": "incidents"}, name="incidents"),
    path("monthly/", views.monthly_page, name="monthly"),
    path("monthly.csv", views.monthly_csv, name="monthly-csv"),
    path("api/monthly", views.monthly_json, name="monthly-json"),
    path("api/names", views.name_suggestions, name="names"),
    path("whatif/", views.whatif_page, name="whatif"),
    path("api/<slug:page>", views.api, name="api"),
]
