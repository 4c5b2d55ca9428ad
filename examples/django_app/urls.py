from __future__ import annotations

from django.urls import path

from examples.django_app import views

urlpatterns = [
    path("api/orders/", views.orders),
    path("api/report/", views.report),
    path("health/", views.health),
]
