from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import views

urlpatterns = [
    path("auth/login/", views.LoginView.as_view(), name="api-login"),
    path("auth/logout/", views.LogoutView.as_view(), name="api-logout"),
    path("auth/logoutall/", views.LogoutAllView.as_view(), name="api-logoutall"),
    path("studies/", views.StudyList.as_view(), name="api-studies"),
    path("images/", views.ImageList.as_view(), name="api-images"),
    path("images/<int:pk>/file/", views.ImageFile.as_view(), name="api-image-file"),
    path("grades/", views.GradeExport.as_view(), name="api-grades"),
    path("training-set/", views.TrainingSet.as_view(), name="api-training-set"),
    path("agreement/", views.Agreement.as_view(), name="api-agreement"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file of its own: no inline script under the CSP.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]
