"""The admin's rough edges a new user met, fixed, as staff see them in Chromium at 1440 x 900.

Study page (graders from the Graders group, no "Hold down Control", wide names, a styled repeat
share), the photos list (readable labels, the study filter with one study), the users list's roles,
the export page (title, CSV first, an "Export" button), human sizes on a field-day import, and the
"API tokens" and "Background tasks" headings.
"""

import io

import pytest

from accounts import roles
from grading.services import grade_types_import
from studies.models import ImageImport
from studies.services import images_upload
from tests import images
from tests.factories import PatientFactory, StudyFactory, UserFactory
from tests.grading_support import SCHEMES

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_NAME = "Amhara trachoma impact survey 2026, second round (zone 4)"


@pytest.fixture
def wide(page):
    page.set_viewport_size({"width": 1440, "height": 900})
    return page


@pytest.fixture
def superuser():
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def study(superuser):
    grade_type = grade_types_import(data={**SCHEMES[0], "name": "WHO simplified trachoma grading system"})[0]
    study = StudyFactory(name=LONG_NAME)
    study.grade_types.add(grade_type)
    grader = UserFactory(username="grader-abebe", groups=[roles.GRADERS])
    study.graders.add(grader)
    UserFactory(username="grader-chaltu", groups=[roles.GRADERS])
    UserFactory(username="collector-dawit", groups=[roles.IMAGE_COLLECTORS])
    UserFactory(username="data-eden", groups=[roles.DATA_TEAM])
    return study


def upload(patient, eye: str, count: int, user, seed: int) -> None:
    files = [
        (f"IMG_{seed + n:04d}.JPG", io.BytesIO(images.jpeg((64, 48), seed=seed + n))) for n in range(count)
    ]
    images_upload(patient=patient, files=files, eye=eye, uploaded_by=user)


def test_study_page_offers_graders_only_with_wide_names(
    wide, live_server, admin_login, screenshot, study, superuser
):
    page = admin_login(superuser)
    page.goto(f"{live_server.url}/admin/studies/study/{study.pk}/change/")

    offered = page.locator("#id_graders label").all_inner_texts()
    assert [name.strip() for name in offered] == ["grader-abebe", "grader-chaltu"]
    assert page.locator("#id_graders input:checked").count() == 1
    form = page.locator("form#study_form").inner_text()
    assert "Hold down" not in form
    assert "Members of the Graders group" in form
    name = page.locator("#id_name")
    assert name.input_value() == LONG_NAME
    assert name.evaluate("(el) => el.scrollWidth <= el.clientWidth"), "the study's name is cut short"
    grade_type = page.locator("#id_grade_types label").first
    assert grade_type.inner_text().strip() == "WHO simplified trachoma grading system"
    assert grade_type.evaluate("(el) => el.scrollWidth <= el.clientWidth"), "the grade type is cut short"
    for number in ("repeat_share", "graders_per_patient", "repeat_gap_min", "pass_kappa"):
        assert "form-control" in page.locator(f"#id_{number}").get_attribute("class"), number
    screenshot("01-study-page")


def test_photos_list_labels_and_study_filter(wide, live_server, admin_login, screenshot, study, superuser):
    patient = PatientFactory(study=study, code="AM-0001")
    upload(patient, "L", 3, superuser, seed=10)
    upload(patient, "R", 1, superuser, seed=20)
    page = admin_login(superuser)
    page.goto(f"{live_server.url}/admin/studies/image/")

    labels = page.locator("#result_list tbody th a").all_inner_texts()
    assert sorted(labels) == [
        "AM-0001, left eye, photo 1 of 3",
        "AM-0001, left eye, photo 2 of 3",
        "AM-0001, left eye, photo 3 of 3",
        "AM-0001, right eye, photo 1 of 1",
    ]
    assert not any("#" in label for label in labels)
    # The study filter, with its one study (Django would hide a filter with a single choice).
    assert page.locator("select", has=page.locator("option", has_text=LONG_NAME)).count() == 1
    screenshot("01-photos-list")


def test_users_list_shows_roles(wide, live_server, admin_login, screenshot, study, superuser):
    UserFactory(username="admin-fikru", groups=[roles.STUDY_ADMINISTRATORS, roles.ADJUDICATORS])
    page = admin_login(superuser)
    page.goto(f"{live_server.url}/admin/auth/user/")

    assert page.locator("#result_list thead").inner_text().lower().count("roles") == 1
    row = page.locator("#result_list tbody tr", has_text="admin-fikru")
    assert "Adjudicators" in row.inner_text() and "Study administrators" in row.inner_text()
    assert "Graders" in page.locator("#result_list tbody tr", has_text="grader-chaltu").inner_text()
    assert "Superuser" in page.locator("#result_list tbody tr", has_text="root").inner_text()
    screenshot("01-users-list")


def test_export_page_has_a_title_csv_and_an_export_button(
    wide, live_server, admin_login, screenshot, study, superuser
):
    page = admin_login(superuser)
    page.goto(f"{live_server.url}/admin/grading/grade/export/")

    assert page.locator("h1").first.inner_text().strip() == "Export grades"
    assert "Export grades" in page.title()
    chosen = page.locator("select[name=format] option:checked")
    assert chosen.inner_text().strip().lower() == "csv"
    assert page.locator("select[name=format] option", has_text="---").count() == 0
    assert page.locator("#gc-export-form [type=submit]").input_value() == "Export"
    screenshot("01-export-grades")


def test_import_detail_shows_human_sizes(wide, live_server, admin_login, screenshot, study, superuser):
    image_import = ImageImport.objects.create(
        study=study, source=ImageImport.Source.ZIP, status=ImageImport.Status.DONE, bytes_expected=8584457,
        files_total=12, files_done=12, patients_created=4, images_created=12, created_by=superuser,
    )  # fmt: skip
    page = admin_login(superuser)
    page.goto(f"{live_server.url}/admin/studies/imageimport/")
    assert "8.2\xa0MB" in page.locator("#result_list").inner_text().replace(" ", "\xa0")
    page.goto(f"{live_server.url}/admin/studies/imageimport/{image_import.pk}/change/")

    content = page.locator("form").last.inner_text()
    assert "8584457" not in content
    assert "8.2" in content and "MB" in content
    screenshot("01-import-detail")


def test_api_tokens_and_background_tasks_headings(wide, live_server, admin_login, screenshot, superuser):
    page = admin_login(superuser)
    sidebar = page.locator("aside").first.inner_text()
    assert "API tokens" in sidebar and "Background tasks" in sidebar
    for package_name in ("Knox", "Auth tokens", "Tasks Database Backend", "Task Results"):
        assert package_name not in sidebar
    page.goto(f"{live_server.url}/admin/knox/authtoken/")
    assert page.locator("h1").first.inner_text().strip() == "API tokens"
    assert "Knox" not in page.locator("body").inner_text()
    screenshot("01-api-tokens")
    page.goto(f"{live_server.url}/admin/django_tasks_database/dbtaskresult/")
    assert page.locator("h1").first.inner_text().strip() == "Background tasks"
    assert "Tasks Database Backend" not in page.locator("body").inner_text()
    screenshot("02-background-tasks")


def test_staff_do_not_see_background_tasks(wide, live_server, admin_login, screenshot, study):
    page = admin_login(UserFactory(username="admin-fikru", groups=[roles.STUDY_ADMINISTRATORS]))
    assert "Background" not in page.locator("aside").first.inner_text()
    screenshot("01-study-administrator-sidebar")
    assert page.goto(f"{live_server.url}/admin/django_tasks_database/dbtaskresult/").status == 403
