"""The admin site: Django's, plus the graders' pages under /admin/grading/."""

from django.contrib.admin import AdminSite
from django.urls import path


class GradingCenterAdminSite(AdminSite):
    site_header = "Grading Center"
    site_title = "Grading Center"
    index_title = "Grading Center"

    def get_urls(self):
        from . import views

        wrap = self.admin_view
        grading = [
            path("grading/", wrap(views.dashboard), name="grading_dashboard"),
            path("grading/study/<int:study_id>/", wrap(views.study_queue), name="grading_study"),
            path("grading/study/<int:study_id>/next/", wrap(views.next_patient), name="grading_next"),
            path(
                "grading/study/<int:study_id>/regrade/<int:number>/",
                wrap(views.regrade_patient),
                name="grading_regrade",
            ),
            # An opaque key per grader and presentation, never the patient's id.
            path("grading/study/<int:study_id>/<uuid:key>/", wrap(views.grade_patient), name="grading_page"),
            path(
                "grading/study/<int:study_id>/<uuid:key>/keep/", wrap(views.keep_patient), name="grading_keep"
            ),
        ]
        return grading + super().get_urls()

    def index(self, request, extra_context=None):
        """Graders, who have nothing else in the admin, start on their grading dashboard."""
        from django.shortcuts import redirect

        user = request.user
        if not user.is_superuser and not user.has_module_perms("studies") and user.graded_studies.exists():
            return redirect("admin:grading_dashboard")
        return super().index(request, extra_context)
