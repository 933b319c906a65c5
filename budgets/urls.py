from django.urls import path

from budgets import views

urlpatterns = [
    path("v1/budget", views.budget, name="budget"),
]
