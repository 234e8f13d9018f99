"""The admin site: Django's, plus the graders' pages under /admin/grading/."""

from django.contrib.admin import AdminSite
from django.urls import path


class GradingCenterAdminSite(AdminSite):
    site_header = "Grading Center"
    site_title = "Grading Center"
    index_title = "Grading Center"

    def get_urls(self):
        from . import adjudication, views

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
            path("grading/adjudication/", wrap(adjudication.index), name="grading_adjudication"),
            path(
                "grading/adjudication/<int:study_id>/",
                wrap(adjudication.study_queue),
                name="grading_adjudication_study",
            ),
            path(
                "grading/adjudication/<int:study_id>/<int:patient_id>/",
                wrap(adjudication.adjudicate),
                name="grading_adjudicate",
            ),
        ]
        return grading + super().get_urls()

    def index(self, request, extra_context=None):
        """Graders, who have nothing else in the admin, start on their grading dashboard.

        So do adjudicators with no other role, on the adjudication index; other staff on the study dashboard.
        """
        from django.shortcuts import redirect

        user = request.user
        if not user.is_superuser and not user.has_module_perms("studies") and user.graded_studies.exists():
            return redirect("admin:grading_dashboard")
        if _adjudicates_only(user):
            return redirect("admin:grading_adjudication")
        # Everyone else: the study dashboard (templates/admin/index.html).
        from .dashboard import home_dashboard

        return super().index(request, {"dashboard": home_dashboard(viewer=user), **(extra_context or {})})


def _adjudicates_only(user) -> bool:
    """An adjudicator with no other work in the admin: no study administrator, collector or data team role."""
    others = ("studies.add_study", "studies.add_patient", "grading.view_all_grades")
    return (
        not user.is_superuser
        and user.has_perm("grading.adjudicate_grade")
        and not any(user.has_perm(permission) for permission in others)
    )
