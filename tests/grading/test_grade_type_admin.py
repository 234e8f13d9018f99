"""Administrators define grade types on one page, reuse them as JSON, and attach them to studies."""

import io
import json

import pytest
from django.urls import reverse

from grading.models import GradeType
from tests.grading_support import SCHEMES, submit


def inline(n: int, name: str, options: str, required=True, order=None, **extra) -> dict:
    data = {
        f"fields-{n}-name": name,
        f"fields-{n}-help_text": f"About {name}",
        f"fields-{n}-order": order if order is not None else n,
        f"fields-{n}-options_text": options,
        **extra,
    }
    if required:
        data[f"fields-{n}-required"] = "on"
    return data


def management(total: int, initial: int = 0) -> dict:
    return {
        "fields-TOTAL_FORMS": str(total),
        "fields-INITIAL_FORMS": str(initial),
        "fields-MIN_NUM_FORMS": "0",
        "fields-MAX_NUM_FORMS": "1000",
    }


def test_whole_grade_type_is_defined_on_one_page(admin_client):
    data = {
        "name": "Simplified",
        "description": "WHO",
        "unit": "eye",
        "is_active": "on",
        **management(2),
        **inline(0, "TF", "0 = Absent\n1 = Present\nU = Ungradable [ungradable]"),
        **inline(1, "TS", "0 = Absent\n1 = Present", required=False),
    }
    response = admin_client.post(reverse("admin:grading_gradetype_add"), data)
    assert response.status_code == 302, response.context and response.context["errors"]
    grade_type = GradeType.objects.get(name="Simplified")
    assert grade_type.unit == GradeType.Unit.EYE
    tf, ts = grade_type.fields.order_by("order")
    assert [(o.value, o.label, o.ungradable) for o in tf.options.all()] == [
        ("0", "Absent", False),
        ("1", "Present", False),
        ("U", "Ungradable", True),
    ]
    assert (tf.required, ts.required) == (True, False)


def test_bad_option_lines_are_refused_on_the_page(admin_client):
    data = {"name": "Broken", "is_active": "on", **management(1), **inline(0, "TF", "0 = A\n0 = B")}
    response = admin_client.post(reverse("admin:grading_gradetype_add"), data)
    assert response.status_code == 200
    assert "the value &#x27;0&#x27; appears twice" in response.content.decode()
    assert not GradeType.objects.filter(name="Broken").exists()


def test_change_page_shows_the_options_and_edits_them(admin_client, who):
    tf = who.fields.get(name="TF")
    page = admin_client.get(reverse("admin:grading_gradetype_change", args=[who.pk])).content.decode()
    assert "U = Ungradable [ungradable]" in page
    fields = list(who.fields.order_by("order"))
    data = {
        "name": who.name,
        "description": who.description,
        "unit": who.unit,
        "is_active": "on",
        **management(len(fields), len(fields)),
    }
    for n, field in enumerate(fields):
        options = (
            "0 = No\n1 = Yes\nU = Cannot tell [ungradable]" if field == tf else "0 = Absent\n1 = Present"
        )
        data.update(
            inline(
                n,
                field.name,
                options,
                order=field.order,
                **{f"fields-{n}-id": field.pk, f"fields-{n}-grade_type": who.pk},
            )
        )
    response = admin_client.post(reverse("admin:grading_gradetype_change", args=[who.pk]), data)
    assert response.status_code == 302
    assert list(tf.options.values_list("label", flat=True)) == ["No", "Yes", "Cannot tell"]
    assert list(who.fields.get(name="TI").options.values_list("value", flat=True)) == ["0", "1"]


def test_option_used_in_grades_cannot_be_removed(admin_client, grading_study, who, graders, make_patients):
    (patient,) = make_patients(grading_study, 1)
    submit(grading_study, patient, graders[0], choice="U")
    fields = list(who.fields.order_by("order"))
    data = {"name": who.name, "description": "", "is_active": "on", **management(len(fields), len(fields))}
    for n, field in enumerate(fields):
        data.update(
            inline(
                n,
                field.name,
                "0 = Absent\n1 = Present",
                order=field.order,
                **{f"fields-{n}-id": field.pk, f"fields-{n}-grade_type": who.pk},
            )
        )
    response = admin_client.post(reverse("admin:grading_gradetype_change", args=[who.pk]), data, follow=True)
    assert "are used in grades and cannot be removed" in response.content.decode()
    assert who.fields.get(name="TF").options.filter(value="U").exists()


def test_export_and_import_json_round_trip(admin_client, who, follicles):
    response = admin_client.post(
        reverse("admin:grading_gradetype_changelist"),
        {"action": "export_json", "_selected_action": [who.pk, follicles.pk]},
    )
    assert response["Content-Disposition"] == 'attachment; filename="grade-types.json"'
    exported = json.loads(response.content)
    assert {item["name"] for item in exported} == {s["name"] for s in SCHEMES}
    GradeType.objects.all().delete()
    upload = io.BytesIO(response.content)
    upload.name = "grade-types.json"
    response = admin_client.post(reverse("admin:grading_gradetype_import"), {"file": upload})
    assert response.status_code == 302
    again = GradeType.objects.get(name=who.name)
    assert [f.name for f in again.fields.order_by("order")] == ["TF", "TI", "TS", "TT", "CO"]
    assert again.fields.get(name="TF").options.filter(ungradable=True).count() == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "This file is not JSON."),
        (b'{"name": "X"}', "needs a list of fields"),
        (b'{"name": "X", "fields": [{"name": "A", "options": []}]}', "needs at least one option"),
    ],
)
def test_bad_import_is_refused_whole(admin_client, content, message):
    upload = io.BytesIO(content)
    upload.name = "x.json"
    response = admin_client.post(reverse("admin:grading_gradetype_import"), {"file": upload})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not GradeType.objects.exists()


def test_import_refuses_an_existing_name(admin_client, who):
    upload = io.BytesIO(json.dumps(SCHEMES).encode())
    upload.name = "x.json"
    response = admin_client.post(reverse("admin:grading_gradetype_import"), {"file": upload})
    assert "already exists" in response.content.decode()
    assert GradeType.objects.count() == 1


def test_study_page_sets_grade_types_and_graders(admin_client, who, follicles, graders):
    from tests.factories import RegionFactory

    region = RegionFactory()
    response = admin_client.post(
        reverse("admin:studies_study_add"),
        {
            "name": "Amhara 2026",
            "region": region.pk,
            "is_active": "on",
            "masked_codes": "on",
            "randomized_order": "on",
            "graders_per_patient": 2,
            "repeat_share": "0.10",
            "repeat_gap_min": "10",
            "grade_types": [who.pk, follicles.pk],
            "graders": [g.pk for g in graders[:2]],
        },
    )
    assert response.status_code == 302
    from studies.models import Study

    study = Study.objects.get(name="Amhara 2026")
    assert set(study.grade_types.all()) == {who, follicles}
    assert set(study.graders.all()) == set(graders[:2])


def test_grade_type_with_grades_cannot_leave_its_study(
    admin_client, grading_study, who, graders, make_patients
):
    (patient,) = make_patients(grading_study, 1)
    submit(grading_study, patient, graders[0])
    response = admin_client.post(
        reverse("admin:studies_study_change", args=[grading_study.pk]),
        {
            "name": grading_study.name,
            "region": grading_study.region_id,
            "is_active": "on",
            "graders_per_patient": 2,
            "repeat_share": "0",
            "repeat_gap_min": "10",
            "grade_types": [],
            "graders": [g.pk for g in graders],
        },
    )
    assert response.status_code == 200
    assert "already has grades in this study" in response.content.decode()
    assert who in grading_study.grade_types.all()


def test_deleting_a_grade_type_with_grades_is_refused_with_a_message(
    admin_client, grading_study, who, graders, make_patients
):
    (patient,) = make_patients(grading_study, 1)
    submit(grading_study, patient, graders[0])
    response = admin_client.post(reverse("admin:grading_gradetype_delete", args=[who.pk]), {"post": "yes"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "would result in deleting related objects" in html and "Grade" in html
    assert GradeType.objects.filter(pk=who.pk).exists()


@pytest.mark.parametrize("model", ["gradetype", "gradefield", "gradeoption", "grade", "gradeentry"])
def test_every_grading_changelist_renders(admin_client, grading_study, graders, make_patients, model):
    for patient in make_patients(grading_study, 3):
        submit(grading_study, patient, graders[0])
    assert admin_client.get(reverse(f"admin:grading_{model}_changelist")).status_code == 200


def test_grade_changelist_queries_do_not_grow(
    admin_client, grading_study, graders, make_patients, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for size in (2, 20):
        from tests.factories import PatientFactory

        for patient in PatientFactory.create_batch(size, study=grading_study):
            submit(grading_study, patient, graders[size % 3])
        with CaptureQueriesContext(connection) as queries:
            admin_client.get(reverse("admin:grading_grade_changelist"))
        counts.append(len(queries))
    assert counts[0] == counts[1]
