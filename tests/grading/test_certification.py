"""Grader certification: trainees against a certification set's reference grades, and the assignment rule."""

import csv
import io
import math
import uuid
from decimal import Decimal

import pytest
from django.urls import reverse

from grading import certification, services
from grading.certification import certification_report, graders_not_certified, passed_certification
from grading.models import Grade, GradeEntry
from grading.reports import Ungradable
from studies.models import Study
from tests.factories import StudyFactory, UserFactory
from tests.grading_support import answers_where, forms_of, submit

# The 9/1/3/7 table: of 10 patients the reference calls positive the trainee says positive for 9, of the 10
# it calls negative, negative for 7. Observed agreement 16/20 = 0.8; the trainee says positive for 12 of 20
# and the reference for 10 of 20, so chance agreement is 0.6 x 0.5 + 0.4 x 0.5 = 0.5 and kappa
# (0.8 - 0.5) / (1 - 0.5) = 0.6; sensitivity 9/10, specificity 7/10.
REFERENCE_20 = ["1"] * 10 + ["0"] * 10
TRAINEE_9137 = ["1"] * 9 + ["0"] + ["1"] * 3 + ["0"] * 7
# The 8/2/2/8 table: kappa (0.8 - 0.5) / 0.5 = 0.6 as well, sensitivity and specificity 0.8.
TRAINEE_8228 = ["1"] * 8 + ["0"] * 2 + ["1"] * 2 + ["0"] * 8


@pytest.fixture
def tf_screen(db):
    """A grade type of the whole patient with one two-level field: TF absent / present, or ungradable."""
    options = [
        {"value": "0", "label": "Absent"},
        {"value": "1", "label": "Present"},
        {"value": "U", "label": "Ungradable", "ungradable": True},
    ]
    return services.grade_types_import(
        data={"name": "TF screen", "fields": [{"name": "TF", "options": options}]}
    )[0]


@pytest.fixture
def trainees(graders):
    graders[0].first_name, graders[0].last_name = "Grace", "Grader"
    graders[0].save()
    return graders


@pytest.fixture
def certification_set(tf_screen, trainees):
    study = StudyFactory(name="TF set", is_certification=True, graders_per_patient=20, repeat_share=0)
    study.grade_types.add(tf_screen)
    study.graders.add(*trainees)
    return study


def reference(study, patient, user, values: dict[str, str]) -> None:
    """Reference grades of the patient as the reference page would save them: per field name (and "TF/L"
    for one eye) the option with that value, "0" where not given, "U" the ungradable option."""
    for form in forms_of(study, patient):
        grade = Grade.objects.create(
            kind=Grade.Kind.REFERENCE, grader=user, patient=patient, grade_type=form.grade_type,
            eye=form.eye, submission=uuid.uuid4(),
        )  # fmt: skip
        entries = []
        for item in form.fields:
            value = values.get(f"{item.field.name}/{form.eye}", values.get(item.field.name, "0"))
            option = next(o for o in item.options if o.value == value or (value == "U" and o.ungradable))
            entries.append(GradeEntry(grade=grade, field=item.field, option=option))
        GradeEntry.objects.bulk_create(entries)


def grade_all(study, grader, patients, answers: list[str], field: str = "TF") -> None:
    for patient, answer in zip(patients, answers, strict=True):
        submit(study, patient, grader, answers=answers_where(study, {field: answer}, patient=patient))


@pytest.fixture
def graded_set(certification_set, trainees, study_admin, make_patients):
    """20 patients with reference TF: grader1 agrees on all, grader2 by the 9/1/3/7 table, grader3 waits."""
    patients = make_patients(certification_set, 20)
    for patient, answer in zip(patients, REFERENCE_20, strict=True):
        reference(certification_set, patient, study_admin, {"TF": answer})
    grade_all(certification_set, trainees[0], patients, REFERENCE_20)
    grade_all(certification_set, trainees[1], patients, TRAINEE_9137)
    return certification_set


def result_of(report, username: str):
    return next(trainee for trainee in report.trainees if trainee.username == username)


def only_field(trainee):
    (item,) = trainee.fields
    return item


# --- The report -------------------------------------------------------------------------------------------


def test_a_trainee_matching_the_reference_passes_with_kappa_1(graded_set):
    trainee = result_of(certification_report(study=graded_set), "grader1")
    item = only_field(trainee)
    assert (trainee.status, trainee.passed, trainee.shortfalls) == ("passed", True, [])
    assert (item.label, item.patients, item.kappa.value, item.percent_agreement.value) == ("TF", 20, 1.0, 1.0)
    assert (item.sensitivity.value, item.specificity.value) == (1.0, 1.0)


@pytest.mark.parametrize(("pass_kappa", "passed"), [("0.70", False), ("0.61", False), ("0.60", True)])
def test_a_trainee_with_kappa_0_6_fails_at_0_7_and_passes_at_0_6(graded_set, pass_kappa, passed):
    graded_set.pass_kappa = Decimal(pass_kappa)
    graded_set.save()
    trainee = result_of(certification_report(study=graded_set), "grader2")
    item = only_field(trainee)
    assert item.kappa.value == pytest.approx(0.6)
    assert item.percent_agreement.value == pytest.approx(0.8)
    assert trainee.passed is passed
    assert trainee.shortfalls == ([] if passed else ["kappa 0.60 on TF"])


def test_sensitivity_and_specificity_take_the_second_level_as_positive(graded_set):
    item = only_field(result_of(certification_report(study=graded_set), "grader2"))
    assert (item.sensitivity.value, item.sensitivity.units) == (0.9, 10)
    assert (item.specificity.value, item.specificity.units) == (0.7, 10)


def test_the_8_2_2_8_table(certification_set, trainees, study_admin, make_patients):
    patients = make_patients(certification_set, 20)
    for patient, answer in zip(patients, REFERENCE_20, strict=True):
        reference(certification_set, patient, study_admin, {"TF": answer})
    grade_all(certification_set, trainees[0], patients, TRAINEE_8228)
    item = only_field(result_of(certification_report(study=certification_set), "grader1"))
    assert item.kappa.value == pytest.approx(0.6)
    assert (item.sensitivity.value, item.specificity.value) == (0.8, 0.8)


def test_an_assigned_grader_without_grades_is_not_started(graded_set):
    report = certification_report(study=graded_set)
    assert [t.username for t in report.trainees] == ["grader1", "grader2", "grader3"]
    trainee = result_of(report, "grader3")
    assert (trainee.status, trainee.passed, trainee.fields, trainee.summary) == (
        "not started", False, [], "not started",
    )  # fmt: skip
    assert (report.passed, report.pass_kappa, report.fields) == (1, 0.7, ["TF"])


def test_a_grader_no_longer_assigned_but_with_grades_is_still_reported(graded_set, trainees):
    graded_set.graders.remove(trainees[1])
    assert [t.username for t in certification_report(study=graded_set).trainees] == [
        "grader1", "grader2", "grader3",
    ]  # fmt: skip


def test_without_reference_grades_nobody_passes(certification_set, trainees, make_patients):
    patients = make_patients(certification_set, 12)
    grade_all(certification_set, trainees[0], patients, ["1"] * 6 + ["0"] * 6)
    trainee = result_of(certification_report(study=certification_set), "grader1")
    item = only_field(trainee)
    assert (item.patients, item.kappa.value, item.kappa.note) == (0, None, certification.NO_REFERENCE)
    assert not trainee.passed
    assert trainee.shortfalls == ["no kappa on TF (not enough data: no reference answer)"]


def test_too_few_patients_compared_give_no_kappa(certification_set, trainees, study_admin, make_patients):
    patients = make_patients(certification_set, 12)
    for patient, answer in zip(patients, ["1", "0"] * 6, strict=True):
        reference(certification_set, patient, study_admin, {"TF": answer})
    grade_all(certification_set, trainees[0], patients[:5], ["1", "0"] * 2 + ["1"])  # agrees, on 5 only
    trainee = result_of(certification_report(study=certification_set), "grader1")
    item = only_field(trainee)
    assert (item.patients, item.kappa.value) == (5, None)
    assert "5 patient(s) compared, at least 10 needed" in item.kappa.note
    assert item.percent_agreement.value == 1.0  # still shown
    assert not trainee.passed


def test_a_single_category_leaves_kappa_undefined(certification_set, trainees, study_admin, make_patients):
    patients = make_patients(certification_set, 12)
    for patient in patients:
        reference(certification_set, patient, study_admin, {"TF": "0"})
    grade_all(certification_set, trainees[0], patients, ["0"] * 12)
    trainee = result_of(certification_report(study=certification_set), "grader1")
    item = only_field(trainee)
    assert (item.patients, item.kappa.value, item.percent_agreement.value) == (12, None, 1.0)
    assert "every answer is the same" in item.kappa.note
    assert item.sensitivity.value is None and "no positive answer" in item.sensitivity.note
    assert item.specificity.value == 1.0
    assert item.passed  # nothing to fault on the field ...
    assert not trainee.passed  # ... but nothing measured either
    assert trainee.shortfalls == [certification.UNMEASURED]


def test_a_sign_the_reference_never_calls_agreed_in_full_does_not_fail_the_trainee(
    certification_set, who, trainees, study_admin, make_patients
):
    """TT and CO are often absent from a whole set: agreeing on every patient passes those fields."""
    certification_set.grade_types.set([who])
    patients = make_patients(certification_set, 20)
    for patient, answer in zip(patients, REFERENCE_20, strict=True):
        reference(certification_set, patient, study_admin, {"TF": answer})  # TI..CO "0" everywhere
    grade_all(certification_set, trainees[0], patients, REFERENCE_20)
    trainee = result_of(certification_report(study=certification_set), "grader1")
    assert trainee.passed
    co = next(item for item in trainee.fields if item.label == "CO, right eye")
    assert co.kappa.value is None and co.percent_agreement.value == 1.0 and co.passed
    grade_all(certification_set, trainees[1], patients, REFERENCE_20)
    submit(
        certification_set, patients[0], trainees[1], regrade=True,
        answers=answers_where(certification_set, {"TF": REFERENCE_20[0], "CO/L": "1"}, patient=patients[0]),
    )  # fmt: skip
    other = result_of(certification_report(study=certification_set), "grader2")
    assert not other.passed  # one CO called where the reference has none: kappa 0 on CO, left eye
    assert any("CO, left eye" in shortfall for shortfall in other.shortfalls)


def test_ungradable_answers_are_left_out_or_counted(certification_set, trainees, study_admin, make_patients):
    patients = make_patients(certification_set, 20)
    for patient, answer in zip(patients, REFERENCE_20, strict=True):
        reference(certification_set, patient, study_admin, {"TF": answer})
    grade_all(certification_set, trainees[0], patients, ["U", "U"] + REFERENCE_20[2:])
    left_out = only_field(result_of(certification_report(study=certification_set), "grader1"))
    counted = only_field(
        result_of(certification_report(study=certification_set, ungradable=Ungradable.CATEGORY), "grader1")
    )
    assert (left_out.patients, left_out.kappa.value, left_out.sensitivity.units) == (18, 1.0, 8)
    assert (counted.patients, counted.percent_agreement.value, counted.sensitivity.value) == (20, 0.9, 0.8)


def test_no_figure_is_ever_nan(graded_set, trainees, study_admin, make_patients):
    for trainee in certification_report(study=graded_set).trainees:
        for item in trainee.fields:
            for figure in (item.kappa, item.percent_agreement, item.sensitivity, item.specificity):
                assert figure is None or figure.value is None or math.isfinite(figure.value)


def test_per_eye_fields_are_reported_per_eye(who, trainees, study_admin, make_patients):
    study = StudyFactory(is_certification=True, graders_per_patient=20, repeat_share=0)
    study.grade_types.add(who)
    study.graders.add(trainees[0])
    patients = make_patients(study, 10)
    right = ["1", "0"] * 5
    left = ["0", "1"] + right[2:]  # two patients swapped
    for patient, r, lt in zip(patients, right, left, strict=True):
        reference(study, patient, study_admin, {"TF/R": r, "TF/L": lt})
        # The trainee answers the right eye's reference for both eyes.
        submit(
            study, patient, trainees[0], answers=answers_where(study, {"TF/R": r, "TF/L": r}, patient=patient)
        )
    report = certification_report(study=study)
    signs = ["TF", "TI", "TS", "TT", "CO"]
    assert report.fields == [f"{s}, right eye" for s in signs] + [f"{s}, left eye" for s in signs]
    by_label = {item.label: item for item in result_of(report, "grader1").fields}
    assert by_label["TF, right eye"].kappa.value == 1.0
    # Left: reference and trainee each 5 present of 10, agreeing on 8: (0.8 - 0.5) / (1 - 0.5) = 0.6.
    assert by_label["TF, left eye"].kappa.value == pytest.approx(0.6)
    assert (by_label["TF, left eye"].eye, by_label["TF, left eye"].patients) == ("L", 10)
    assert by_label["TI, left eye"].kappa.value is None  # every answer absent


def test_passed_certification_and_graders_not_certified(graded_set, trainees, django_assert_max_num_queries):
    assert passed_certification(study=graded_set, users=trainees) == {
        trainees[0].pk: True, trainees[1].pk: False, trainees[2].pk: False,
    }  # fmt: skip
    target = Study.objects.get(pk=StudyFactory(certification_required=graded_set).pk)  # nothing cached
    with django_assert_max_num_queries(5):
        assert graders_not_certified(study=target, graders=trainees) == trainees[1:]
    assert graders_not_certified(study=StudyFactory(), graders=trainees) == []


# --- Bounded queries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("patients", [10, 60])
def test_the_report_reads_a_fixed_number_of_queries(
    patients,
    certification_set,
    trainees,
    study_admin,
    make_patients,
    client_for,
    django_assert_max_num_queries,
):
    made = make_patients(certification_set, patients)
    answers = (["1", "0"] * patients)[:patients]
    for patient, answer in zip(made, answers, strict=True):
        reference(certification_set, patient, study_admin, {"TF": answer})
    grade_all(certification_set, trainees[0], made, answers)
    grade_all(certification_set, trainees[1], made, list(reversed(answers)))
    with django_assert_max_num_queries(5):  # fields, answers, trainees and the snapshot's savepoints
        certification_report(study=certification_set)
    url = reverse("admin:studies_study_certification", args=[certification_set.pk])
    client = client_for(study_admin)
    with django_assert_max_num_queries(12):
        assert client.get(url).status_code == 200


# --- The admin page -------------------------------------------------------------------------------------


def url_of(study, **query) -> str:
    url = reverse("admin:studies_study_certification", args=[study.pk])
    return url + ("?" + "&".join(f"{key}={value}" for key, value in query.items()) if query else "")


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.mark.parametrize("role", ["superuser", "study_admin", "data_member"])
def test_the_page_shows_each_trainee_pass_or_fail(role, graded_set, client_for, request):
    response = client_for(request.getfixturevalue(role)).get(url_of(graded_set))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Pass mark" in page and "0.70" in page
    assert "Grace Grader" in page and "badge bg-success" in page and "badge bg-danger" in page
    assert "kappa 0.60 on TF" in page and "not started" in page
    assert "0.900" in page and "0.700" in page  # grader2's sensitivity and specificity


@pytest.mark.parametrize("role", ["grader", "collector"])
def test_graders_and_image_collectors_are_refused(role, graded_set, client_for, request):
    user = request.getfixturevalue(role)
    if role == "grader":
        graded_set.graders.add(user)  # even a trainee of this very set
    assert client_for(user).get(url_of(graded_set)).status_code == 403
    assert client_for(user).get(url_of(graded_set, download="csv")).status_code == 403


def test_an_unknown_study_is_not_found(client_for, superuser):
    assert (
        client_for(superuser).get(reverse("admin:studies_study_certification", args=[999999])).status_code
        == 404
    )


def test_a_study_that_is_not_a_certification_set_says_so(grading_study, client_for, superuser):
    response = client_for(superuser).get(url_of(grading_study))
    assert response.status_code == 200
    assert "is not a certification set" in response.content.decode()


def test_the_csv_has_a_row_per_trainee_and_field(graded_set, client_for, superuser):
    response = client_for(superuser).get(url_of(graded_set, download="csv"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(row["trainee"], row["status"], row["field"]) for row in rows] == [
        ("grader1", "passed", "TF"), ("grader2", "failed", "TF"), ("grader3", "not started", ""),
    ]  # fmt: skip
    assert float(rows[1]["kappa"]) == pytest.approx(0.6) and rows[1]["sensitivity"] == "0.9"
    assert rows[1]["pass_kappa"] == "0.7" and rows[1]["ungradable"] == "ungradable answers left out"


def test_the_set_links_to_its_page(graded_set, grading_study, client_for, superuser):
    client = client_for(superuser)
    assert (
        url_of(graded_set)
        in client.get(reverse("admin:studies_study_change", args=[graded_set.pk])).content.decode()
    )
    change = client.get(reverse("admin:studies_study_change", args=[grading_study.pk])).content.decode()
    assert url_of(grading_study) not in change


# --- Assignment -----------------------------------------------------------------------------------------


def study_form(study, **changes) -> dict:
    data = {
        "name": study.name,
        "region": study.region_id,
        "is_active": "on",
        "masked_codes": "on",
        "randomized_order": "on",
        "graders_per_patient": study.graders_per_patient,
        "repeat_share": str(study.repeat_share),
        "repeat_gap_min": study.repeat_gap_min,
        "grade_types": [t.pk for t in study.grade_types.all()],
        "graders": [g.pk for g in study.graders.all()],
        "pass_kappa": str(study.pass_kappa),
        "certification_required": study.certification_required_id or "",
    }
    if study.is_certification:
        data["is_certification"] = "on"
    return {**data, **changes}


@pytest.fixture
def field_study(graded_set, who):
    study = StudyFactory(name="Amhara field", graders_per_patient=2, certification_required=graded_set)
    study.grade_types.add(who)
    return study


def test_assigning_a_grader_who_failed_the_certification_is_refused(field_study, trainees, admin_client):
    change = reverse("admin:studies_study_change", args=[field_study.pk])
    response = admin_client.post(change, study_form(field_study, graders=[trainees[0].pk, trainees[1].pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "grader2 has not passed the certification set TF set (kappa 0.60 on TF)." in page
    assert "Grace Grader" not in page  # she passed
    assert list(field_study.graders.all()) == []


def test_assigning_a_grader_who_passed_is_accepted(field_study, trainees, admin_client):
    change = reverse("admin:studies_study_change", args=[field_study.pk])
    response = admin_client.post(change, study_form(field_study, graders=[trainees[0].pk]))
    assert response.status_code == 302
    assert list(field_study.graders.all()) == [trainees[0]]


def test_a_grader_who_never_started_is_refused(field_study, trainees, admin_client):
    change = reverse("admin:studies_study_change", args=[field_study.pk])
    response = admin_client.post(change, study_form(field_study, graders=[trainees[2].pk]))
    assert "grader3 has not passed the certification set TF set (not started)." in response.content.decode()


def test_requiring_a_certification_checks_the_graders_already_assigned(
    grading_study, graded_set, admin_client
):
    change = reverse("admin:studies_study_change", args=[grading_study.pk])
    response = admin_client.post(change, study_form(grading_study, certification_required=graded_set.pk))
    assert response.status_code == 200
    page = response.content.decode()
    assert "grader2 has not passed" in page and "grader3 has not passed" in page
    grading_study.refresh_from_db()
    assert grading_study.certification_required is None


def test_graders_assigned_before_stay_when_the_study_is_saved_again(field_study, trainees, admin_client):
    field_study.graders.add(trainees[1])  # assigned before the requirement, outside the form
    change = reverse("admin:studies_study_change", args=[field_study.pk])
    response = admin_client.post(change, study_form(field_study, description="more words"))
    assert response.status_code == 302


def test_a_study_cannot_require_itself(graded_set, admin_client):
    change = reverse("admin:studies_study_change", args=[graded_set.pk])
    response = admin_client.post(change, study_form(graded_set, certification_required=graded_set.pk))
    assert response.status_code == 200
    assert "A study cannot require itself as its certification set." in response.content.decode()


def test_the_study_page_sets_the_certification_fields(graded_set, admin_client, plain_study):
    change = reverse("admin:studies_study_change", args=[plain_study.pk])
    page = admin_client.get(change).content.decode()
    assert "Certification" in page and 'name="pass_kappa"' in page
    data = study_form(plain_study, is_certification="on", pass_kappa="")  # blank: the usual bar
    assert admin_client.post(change, data).status_code == 302
    plain_study.refresh_from_db()
    assert (plain_study.is_certification, plain_study.pass_kappa) == (True, Decimal("0.70"))


@pytest.fixture
def plain_study(db):
    return StudyFactory(name="Second set")
