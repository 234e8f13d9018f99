"""View-only roles open a study's page: read-only, its grade types listed, their buttons kept."""

import pytest
from django.urls import reverse

from accounts import roles
from tests.factories import UserFactory


@pytest.mark.parametrize("role", [roles.IMAGE_COLLECTORS, roles.DATA_TEAM, roles.ADJUDICATORS])
def test_view_only_roles_see_the_study_page_with_its_grade_types(client_for, grading_study, who, role):
    user = UserFactory(username="viewer", groups=[role])

    response = client_for(user).get(reverse("admin:studies_study_change", args=[grading_study.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert who.name in page
    assert 'name="grade_types"' not in page  # listed, not editable
    assert 'name="_save"' not in page


def test_collector_keeps_the_field_day_import_button_on_a_read_only_study_page(
    client_for, collector, grading_study
):
    response = client_for(collector).get(reverse("admin:studies_study_change", args=[grading_study.pk]))

    assert response.status_code == 200
    assert reverse("admin:studies_study_import", args=[grading_study.pk]) in response.content.decode()


@pytest.mark.parametrize("role", [roles.DATA_TEAM, roles.ADJUDICATORS])
def test_who_may_read_the_reports_sees_their_buttons_on_a_read_only_study_page(
    client_for, grading_study, role
):
    grading_study.is_certification = True
    grading_study.save()
    user = UserFactory(username="reader", groups=[role])

    page = (
        client_for(user).get(reverse("admin:studies_study_change", args=[grading_study.pk])).content.decode()
    )

    assert reverse("admin:studies_study_agreement", args=[grading_study.pk]) in page
    assert reverse("admin:studies_study_certification", args=[grading_study.pk]) in page


def test_a_collector_sees_no_report_button(client_for, collector, grading_study):
    page = (
        client_for(collector)
        .get(reverse("admin:studies_study_change", args=[grading_study.pk]))
        .content.decode()
    )

    assert reverse("admin:studies_study_agreement", args=[grading_study.pk]) not in page


def test_study_administrator_still_edits_the_grade_types(client_for, study_admin, grading_study, who):
    response = client_for(study_admin).get(reverse("admin:studies_study_change", args=[grading_study.pk]))

    assert response.status_code == 200
    assert 'name="grade_types"' in response.content.decode()
