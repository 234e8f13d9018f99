"""The admin's home page is the study dashboard: each active study's figures, each linking to its list,
shown to each role as far as that role may open the list, in the same few queries at any study size."""

import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts import roles
from grading import dashboard
from grading.models import Consensus, Grade, GradeField
from studies.models import Image, ImageImport, Patient
from tests.factories import StudyFactory, UserFactory
from tests.grading_support import answers_where, submit

HOME = "/admin/"


def patients_add(study, count: int, *, start: int = 0) -> list[Patient]:
    """Patients with two photos each (rows only, no files), created in bulk."""
    patients = Patient.objects.bulk_create(
        Patient(study=study, code=f"BULK-{n:05d}") for n in range(start, start + count)
    )
    Image.objects.bulk_create(image_row(patient, eye) for patient in patients for eye in "RL")
    return patients


def image_row(patient: Patient, eye: str) -> Image:
    """A photo's row without a file: the dashboard counts rows, it never opens files."""
    name = f"{patient.code}{eye}"
    return Image(
        patient=patient, study_id=patient.study_id, eye=eye, file=f"{name}.jpg", thumbnail=f"{name}-t.jpg",
        sha256=name, width=8, height=8, bytes=100, original_name=f"{name}.jpg",
    )  # fmt: skip


def grades_add(study, patients: list[Patient], graders, *, days_ago: int = 0) -> None:
    """A current regular grade by each grader for each patient (rows only), `days_ago` days back."""
    grade_type = study.grade_types.get()
    grades = Grade.objects.bulk_create(
        Grade(patient=patient, grade_type=grade_type, grader=grader, eye="R", submission=uuid.uuid4())
        for patient in patients
        for grader in graders
    )
    if days_ago:
        Grade.objects.filter(pk__in=[g.pk for g in grades]).update(
            created_at=timezone.now() - timedelta(days=days_ago)
        )


def waiting_add(study, patients: list[Patient]) -> None:
    """Patients whose graders disagree: a consensus row waiting for adjudication each."""
    tf = GradeField.objects.get(grade_type__studies=study, name="TF")
    Consensus.objects.bulk_create(
        Consensus(patient=p, grade_type=tf.grade_type, eye="R", field=tf, method=Consensus.Method.PENDING)
        for p in patients
    )


@pytest.fixture
def busy_study(grading_study, graders, make_patients):
    """The demo's shape: 6 patients, 4 graded by two graders (one of them disputed), one import."""
    patients = make_patients(grading_study, 6)
    Image.objects.bulk_create(image_row(patient, "R") for patient in patients)
    for n, patient in enumerate(patients[:4]):
        for grader, tf in zip(graders[:2], ["0", "1" if n == 0 else "0"], strict=True):
            submit(grading_study, patient, grader, answers=answers_where(grading_study, {"TF": tf}, patient))
    ImageImport.objects.create(
        study=grading_study, source=ImageImport.Source.ZIP, status=ImageImport.Status.DONE, files_total=6,
        files_done=6, patients_created=6, images_created=6,
    )  # fmt: skip
    return grading_study


def user_in(*groups: str, username: str = "someone", **extra):
    return UserFactory(username=username, groups=list(groups), **extra)


def home_as(user) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(HOME)
    assert response.status_code == 200
    return response.content.decode()


def section(html: str, study) -> str:
    """The part of the page about one study."""
    return html.split(f'id="gc-study-{study.pk}"', 1)[1].split("</section>", 1)[0]


def figure(html: str, name: str) -> str:
    """The number a figure tile of the page (or of a study's section) shows."""
    match = re.search(rf'class="info-box gc-figure {name}.*?gc-number">([^<]*)<', html, re.S)
    assert match, f"no {name} figure"
    return match.group(1).strip()


def test_the_home_page_shows_each_active_study_with_its_figures_and_links(busy_study, graders, study_admin):
    StudyFactory(name="Closed study", is_active=False)
    html = home_as(study_admin)

    assert "Study dashboard" in html
    assert f'id="gc-study-{busy_study.pk}"' in html
    assert "Closed study" not in html and "1 inactive" in html
    assert figure(html, "gc-patients") == "6"
    assert figure(html, "gc-images") == "6"
    assert figure(html, "gc-ungraded") == "2"  # the photos of the 2 patients nobody graded
    assert "2 patients not graded yet" in html
    assert figure(html, "gc-waiting") == "1"
    assert "<b>4</b> of 6" in html  # patients with all their graders
    patients = reverse("admin:studies_patient_changelist")
    assert f'href="{patients}?study__id__exact={busy_study.pk}"' in html
    assert f'href="{patients}?study__id__exact={busy_study.pk}&amp;grades__isnull=True"' in html
    assert f'href="{reverse("admin:studies_image_changelist")}?study__id__exact={busy_study.pk}"' in html
    consensus = reverse("admin:grading_consensus_changelist")
    assert f'href="{consensus}?method__exact=pending&amp;patient__study__id__exact={busy_study.pk}"' in html
    grades = reverse("admin:grading_grade_changelist")
    for grader in graders:  # every assigned grader has a bar; the third has graded nobody
        assert f"{grades}?patient__study__id__exact={busy_study.pk}&amp;grader__id__exact={grader.pk}" in html
    assert html.count('class="gc-grader ') == 3
    # Patients graded of those in each grader's queue: the 4 patients with their two graders left grader3's.
    assert re.findall(r'gc-grader-count">([^<]*)<', html) == ["4 / 6", "4 / 6", "0 / 2"]
    imports = reverse("admin:studies_imageimport_changelist")
    assert f'href="{imports}?study__id__exact={busy_study.pk}"' in html
    assert html.count('class="gc-import"') == 1 and "Done" in html
    assert 'id="gc-dashboard-data"' in html and "gradingcenter/dashboard.js" in html
    assert "vendor/chartjs/chart.umd.min.js" in html


def test_every_link_of_the_dashboard_opens_its_list(busy_study, study_admin):
    """The filters the figures link to are ones the admin lists accept (no "?e=1" refusal)."""
    html = home_as(study_admin)
    client = Client()
    client.force_login(study_admin)
    links = set(re.findall(r'href="(/admin/[^"]*\?[^"]*)"', html))
    assert len(links) >= 8
    for link in links:
        response = client.get(link.replace("&amp;", "&"))
        assert response.status_code == 200, link


def test_the_chart_counts_grades_per_day_and_kind_over_eight_weeks(grading_study, graders, study_admin):
    patients = patients_add(grading_study, 5)
    grades_add(grading_study, patients[:3], graders[:2])  # today: 6
    grades_add(grading_study, patients[3:], graders[:1], days_ago=3)  # 3 days ago: 2
    grades_add(grading_study, patients[:1], graders[2:], days_ago=70)  # before the window
    board = dashboard.home_dashboard(viewer=study_admin)

    data = board.chart_data()
    assert len(data["days"]) == 56 and data["days"][-1] == timezone.localdate().isoformat()
    (regular,) = data["studies"][str(grading_study.pk)]
    assert regular["kind"] == "regular" and regular["label"] == "Regular"
    assert regular["counts"][-1] == 6 and regular["counts"][-4] == 2 and sum(regular["counts"]) == 8


def test_the_page_costs_the_same_queries_for_10_and_1000_patients(grading_study, graders, study_admin):
    client = Client()
    client.force_login(study_admin)
    client.get(HOME)  # the session and permission caches warm, as on any later visit

    def measured(size: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(HOME)
        assert response.status_code == 200
        html = section(response.content.decode(), grading_study)
        assert figure(html, "gc-patients") == str(size) and figure(html, "gc-images") == str(2 * size)
        assert figure(html, "gc-waiting") == str(size // 10)
        return len(queries)

    def grown_to(size: int, start: int) -> None:
        patients = patients_add(grading_study, size - start, start=start)
        grades_add(grading_study, patients[: len(patients) // 2], graders[:2])
        waiting_add(grading_study, patients[: len(patients) // 10])
        ImageImport.objects.create(study=grading_study, source=ImageImport.Source.FOLDER, files_total=size)

    grown_to(10, 0)
    small = measured(10)
    grown_to(1000, 10)
    StudyFactory(name="Another study").grade_types.add(grading_study.grade_types.get())
    assert measured(1000) == small
    assert small <= 16  # session, user, permissions, then one query per kind of figure


def test_a_collector_sees_photos_and_imports_but_no_grading_figures(busy_study, graders, collector):
    html = home_as(collector)

    assert figure(html, "gc-patients") == "6" and figure(html, "gc-images") == "6"
    assert figure(html, "gc-ungraded") == "2"
    assert 'class="gc-import"' in html
    assert reverse("admin:studies_study_import", args=[busy_study.pk]) in html  # may import a field day
    for hidden in ["gc-waiting", "gc-chart-card", "gc-progress-card", "gc-dashboard-data", "chart.umd"]:
        assert hidden not in html
    for grader in graders:  # who grades is not the collector's business
        assert grader.username not in html
    assert "Add a study" not in html


def test_the_data_team_sees_progress_and_grades_but_may_not_import(busy_study, graders, data_member):
    html = home_as(data_member)

    for shown in ["gc-patients", "gc-images", "gc-ungraded", "gc-waiting", "gc-chart-card", "gc-progress"]:
        assert shown in html
    assert html.count('class="gc-grader ') == 3 and graders[0].username in html
    assert 'class="gc-import"' in html
    assert reverse("admin:studies_study_import", args=[busy_study.pk]) not in html
    assert "Add a study" not in html


def test_an_adjudicator_who_also_collects_is_sent_to_the_adjudication_queue(busy_study, graders):
    html = home_as(user_in(roles.ADJUDICATORS, roles.IMAGE_COLLECTORS))

    assert figure(html, "gc-waiting") == "1"
    assert f'href="{reverse("admin:grading_adjudication_study", args=[busy_study.pk])}"' in html
    assert reverse("admin:grading_consensus_changelist") not in html  # not a list they may open
    assert "gc-chart-card" not in html and graders[0].username not in html


def test_a_superuser_sees_everything_and_may_add_a_study(busy_study):
    html = home_as(UserFactory(username="root", is_superuser=True))

    for shown in ["gc-patients", "gc-ungraded", "gc-waiting", "gc-chart-card", "gc-grader ", "gc-import"]:
        assert shown in html
    assert "Add a study" in html


def test_with_no_active_study_the_dashboard_says_so(study_admin):
    StudyFactory(is_active=False)
    html = home_as(study_admin)

    assert "No active study" in html and "Add a study" in html
    assert "gc-dashboard-data" not in html and "chart.umd" not in html


def test_graders_and_adjudicators_keep_their_own_pages(grading_study, graders, client_for):
    assert client_for(graders[0]).get(HOME).url == reverse("admin:grading_dashboard")
    adjudicator = user_in(roles.ADJUDICATORS, username="adjudicator")
    assert client_for(adjudicator).get(HOME).url == reverse("admin:grading_adjudication")


def test_a_user_who_may_not_see_studies_gets_the_plain_list_without_figures(busy_study):
    """A grader assigned to nothing stays on the home page: no study, count or name is shown."""
    html = home_as(user_in(roles.GRADERS, username="newgrader"))

    assert "Study dashboard" not in html and "gc-dashboard" not in html
    assert busy_study.name not in html


def test_the_dashboard_is_refused_to_visitors_and_non_staff(busy_study, client):
    login = reverse("admin:login")
    assert client.get(HOME).url == f"{login}?next={HOME}"
    client.force_login(UserFactory(username="outsider", is_staff=False, groups=[roles.STUDY_ADMINISTRATORS]))
    response = client.get(HOME)
    assert response.status_code == 302 and response.url.startswith(login)
