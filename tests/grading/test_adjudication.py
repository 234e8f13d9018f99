"""Adjudication: patients whose graders disagree wait for an adjudicator, whose grade settles them."""

import uuid

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.urls import reverse

from accounts import roles
from grading import selectors, services
from grading.models import Consensus, Grade, GradeField, GradeOption
from tests.factories import PatientFactory, StudyFactory, UserFactory
from tests.grading_support import answers_for, answers_where, submit


@pytest.fixture
def adjudicator(db):
    return UserFactory(
        username="adjudicator", first_name="Ada", last_name="Judge", groups=[roles.ADJUDICATORS]
    )


@pytest.fixture
def named_graders(graders):
    for grader, (first, last) in zip(graders, [("Grace", "First"), ("Gil", "Second"), ("", "")], strict=True):
        grader.first_name, grader.last_name = first, last
        grader.save()
    return graders


def disputed(study, graders, patient, **alike):
    """Two graders answer everything alike except TF of the right eye."""
    for grader, value in zip(graders, ["0", "1"], strict=False):
        answers = answers_where(study, {**alike, "TF/R": value}, patient=patient)
        submit(study, patient, grader, answers=answers)


@pytest.fixture
def waiting(grading_study, named_graders, make_patients):
    """A patient whose two graders disagree on TF of the right eye."""
    (patient,) = make_patients(grading_study, 1)
    disputed(grading_study, named_graders, patient)
    return patient


def index_url() -> str:
    return reverse("admin:grading_adjudication")


def queue_url(study) -> str:
    return reverse("admin:grading_adjudication_study", args=[study.pk])


def page_url(study, patient) -> str:
    return reverse("admin:grading_adjudicate", args=[study.pk, patient.pk])


def adjudication_post(study, patient, values: dict[str, str], *, key=None, note: str = "") -> dict[str, str]:
    return {
        **answers_where(study, values, patient=patient),
        "submission": str(key or uuid.uuid4()),
        "note": note,
    }


def key_of(study, field: str, eye: str) -> str:
    """The form name of one field's answer for one eye."""
    grade_field = GradeField.objects.get(grade_type__studies=study, name=field)
    return services.answer_key(grade_field.grade_type_id, grade_field.pk, eye)


def consensus_of(patient, field: str, eye: str) -> Consensus:
    return Consensus.objects.select_related("option").get(patient=patient, field__name=field, eye=eye)


def field_errors(response, field: str, eye: str) -> list[str]:
    """The messages the page shows beside one field of one eye."""
    forms = response.context["page"].forms
    return next(
        row.errors for form in forms if form.form.eye == eye for row in form.fields if row.field.name == field
    )


def queued(study) -> list[int]:
    queue = selectors.adjudication_queue(study=study, page_number=1, per_page=100)
    return [row.patient_id for row in queue.rows]


def test_graders_disagreeing_put_the_patient_in_the_queue(grading_study, waiting, adjudicator, client_for):
    assert consensus_of(waiting, "TF", "R").method == Consensus.Method.PENDING
    assert consensus_of(waiting, "TF", "L").method == Consensus.Method.MAJORITY
    assert queued(grading_study) == [waiting.pk]

    client = client_for(adjudicator)
    index = client.get(index_url())
    assert index.status_code == 200
    (row,) = [r for r in index.context["studies"] if r.study == grading_study]
    assert row.waiting == 1
    queue = client.get(queue_url(grading_study))
    assert queue.status_code == 200
    html = queue.content.decode()
    assert waiting.code in html and page_url(grading_study, waiting) in html
    assert "TF, right eye" in html


def test_the_adjudicator_sees_every_graders_answers_with_their_names(
    grading_study, waiting, named_graders, adjudicator, client_for
):
    response = client_for(adjudicator).get(page_url(grading_study, waiting))
    assert response.status_code == 200
    html = response.content.decode()
    assert waiting.code in html  # adjudicators see through the masking
    assert "Grace First" in html and "Gil Second" in html
    page = response.context["page"]
    right = next(form for form in page.forms if form.form.eye == "R")
    tf = next(row for row in right.fields if row.field.name == "TF")
    assert {cell.grader: cell.label for cell in tf.answers} == {
        "Grace First": "Absent",
        "Gil Second": "Present",
    }
    assert tf.disagree and all(cell.disagrees for cell in tf.answers)
    assert tf.chosen == ""  # the disputed field waits for the adjudicator's answer
    ti = next(row for row in right.fields if row.field.name == "TI")
    assert not ti.disagree and ti.chosen  # an agreed field starts from its majority
    assert html.count("gc-answer gc-disagree") == 2


def test_an_adjudication_settles_the_consensus_and_the_patient_leaves_the_queue(
    grading_study, waiting, adjudicator, client_for
):
    client = client_for(adjudicator)
    response = client.post(
        page_url(grading_study, waiting), adjudication_post(grading_study, waiting, {"TF/R": "1"})
    )
    assert response.status_code == 302
    assert response["Location"] == queue_url(grading_study)  # the queue is empty now
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        f"Saved the adjudication of {waiting.code}."
    ]
    tf = consensus_of(waiting, "TF", "R")
    assert (tf.method, tf.option.value) == (Consensus.Method.ADJUDICATED, "1")
    saved = Grade.objects.filter(kind=Grade.Kind.ADJUDICATION, grader=adjudicator, is_current=True)
    assert sorted(saved.values_list("eye", flat=True)) == ["L", "R"]
    assert queued(grading_study) == []
    assert 'class="gc-queue-row"' not in client.get(queue_url(grading_study)).content.decode()


def test_save_and_next_goes_to_the_next_patient_waiting(
    grading_study, named_graders, make_patients, adjudicator, client_for
):
    first, second = make_patients(grading_study, 2)
    disputed(grading_study, named_graders, first)
    disputed(grading_study, named_graders, second)
    assert queued(grading_study) == [first.pk, second.pk]  # longest waiting first
    response = client_for(adjudicator).post(
        page_url(grading_study, first), adjudication_post(grading_study, first, {"TF/R": "0"})
    )
    assert response["Location"] == page_url(grading_study, second)


def test_a_majority_never_enters_the_queue(who, graders, make_patients, adjudicator, client_for):
    study = StudyFactory(graders_per_patient=3, repeat_share=0)
    study.grade_types.add(who)
    study.graders.add(*graders)
    (patient,) = make_patients(study, 1)
    for grader, value in zip(graders, ["1", "1", "0"], strict=True):
        submit(study, patient, grader, answers=answers_where(study, {"TF/R": value}, patient=patient))
    tf = consensus_of(patient, "TF", "R")
    assert (tf.method, tf.option.value) == (Consensus.Method.MAJORITY, "1")
    assert queued(study) == []
    assert selectors.adjudication_next(study=study) is None
    # Nor may it be adjudicated: its graders settled it.
    client = client_for(adjudicator)
    page = client.get(page_url(study, patient))
    assert page.status_code == 200 and 'id="gc-not-waiting"' in page.content.decode()
    response = client.post(page_url(study, patient), adjudication_post(study, patient, {"TF/R": "0"}))
    assert response.status_code == 400
    assert "not waiting for adjudication" in response.content.decode()
    assert not Grade.objects.filter(kind=Grade.Kind.ADJUDICATION).exists()


def test_the_same_page_sent_twice_saves_once(grading_study, waiting, adjudicator, client_for):
    client = client_for(adjudicator)
    data = adjudication_post(grading_study, waiting, {"TF/R": "1"}, note="looked twice")
    assert client.post(page_url(grading_study, waiting), data).status_code == 302
    again = client.post(page_url(grading_study, waiting), data)
    assert again.status_code == 302
    assert Grade.objects.filter(kind=Grade.Kind.ADJUDICATION).count() == 2  # one per eye, once
    # The same key with other answers saves nothing and says so.
    other = {**adjudication_post(grading_study, waiting, {"TF/R": "0"}), "submission": data["submission"]}
    refused = client.post(page_url(grading_study, waiting), other)
    assert refused.status_code == 409
    assert "already saved" in refused.content.decode()
    assert refused.context["submission"] != uuid.UUID(data["submission"])  # a fresh key to save on purpose
    assert Grade.objects.filter(kind=Grade.Kind.ADJUDICATION).count() == 2
    assert consensus_of(waiting, "TF", "R").option.value == "1"


def test_a_foreign_option_or_a_missing_answer_is_refused_with_the_answers_kept(
    grading_study, waiting, adjudicator, client_for
):
    client = client_for(adjudicator)
    data = adjudication_post(grading_study, waiting, {"TF/R": "1"})
    tf_right = key_of(grading_study, "TF", "R")
    ti_option = GradeOption.objects.get(field__grade_type__studies=grading_study, field__name="TI", value="1")
    foreign = {**data, tf_right: str(ti_option.pk)}
    response = client.post(page_url(grading_study, waiting), foreign)
    assert response.status_code == 400
    (message,) = field_errors(response, "TF", "R")
    assert "not an option of TF" in message and message in response.content.decode()

    missing = {**data}
    del missing[tf_right]
    missing["note"] = "kept note"
    response = client.post(page_url(grading_study, waiting), missing)
    assert response.status_code == 400
    html = response.content.decode()
    (message,) = field_errors(response, "TF", "R")
    assert "required" in message and message in html and "kept note" in html
    kept = [row for form in response.context["page"].forms for row in form.fields if row.chosen]
    assert len(kept) == 9  # every other answer sent stays chosen
    assert not Grade.objects.filter(kind=Grade.Kind.ADJUDICATION).exists()
    assert consensus_of(waiting, "TF", "R").method == Consensus.Method.PENDING


def test_a_damaged_page_key_is_refused_not_a_server_error(grading_study, waiting, adjudicator, client_for):
    data = {**adjudication_post(grading_study, waiting, {"TF/R": "1"}), "submission": "not-a-key"}
    response = client_for(adjudicator).post(page_url(grading_study, waiting), data)
    assert response.status_code == 400
    assert "reload the page" in response.content.decode()
    assert not Grade.objects.filter(kind=Grade.Kind.ADJUDICATION).exists()


@pytest.mark.parametrize("role", ["grader", "data_member", "collector", "study_grader"])
def test_graders_data_team_and_collectors_are_refused_everywhere(
    role, grading_study, waiting, named_graders, client_for, request
):
    user = named_graders[0] if role == "study_grader" else request.getfixturevalue(role)
    client = client_for(user)
    for url in [index_url(), queue_url(grading_study), page_url(grading_study, waiting)]:
        assert client.get(url).status_code == 403, url
    response = client.post(
        page_url(grading_study, waiting), adjudication_post(grading_study, waiting, {"TF/R": "1"})
    )
    assert response.status_code == 403
    assert not Grade.objects.filter(kind=Grade.Kind.ADJUDICATION).exists()


@pytest.mark.parametrize("role", ["study_admin", "superuser"])
def test_study_administrators_and_superusers_may_adjudicate(
    role, grading_study, waiting, client_for, request
):
    user = (
        UserFactory(username="root", is_superuser=True)
        if role == "superuser"
        else request.getfixturevalue(role)
    )
    client = client_for(user)
    for url in [index_url(), queue_url(grading_study), page_url(grading_study, waiting)]:
        assert client.get(url).status_code == 200, url


def test_unknown_studies_and_patients_of_another_study_are_not_found(
    grading_study, waiting, adjudicator, client_for
):
    client = client_for(adjudicator)
    elsewhere = PatientFactory(study=StudyFactory())
    assert client.get(reverse("admin:grading_adjudication_study", args=[999999])).status_code == 404
    assert client.get(reverse("admin:grading_adjudicate", args=[999999, waiting.pk])).status_code == 404
    assert client.get(reverse("admin:grading_adjudicate", args=[grading_study.pk, 999999])).status_code == 404
    assert client.get(page_url(grading_study, elsewhere)).status_code == 404
    response = client.post(page_url(grading_study, elsewhere), adjudication_post(grading_study, waiting, {}))
    assert response.status_code == 404


def test_a_re_adjudication_supersedes_the_earlier_one(grading_study, waiting, adjudicator, client_for):
    client = client_for(adjudicator)
    client.post(page_url(grading_study, waiting), adjudication_post(grading_study, waiting, {"TF/R": "1"}))
    earlier = Grade.objects.get(kind=Grade.Kind.ADJUDICATION, eye="R")
    page = client.get(page_url(grading_study, waiting))  # no longer waiting, but open to change
    assert page.status_code == 200 and 'id="gc-earlier"' in page.content.decode()
    assert [name for name, _ in page.context["page"].earlier] == ["Ada Judge"]  # once, for both eyes
    right = next(form for form in page.context["page"].forms if form.form.eye == "R")
    assert next(row for row in right.fields if row.field.name == "TF").chosen == str(
        earlier.entries.get(field__name="TF").option_id
    )
    response = client.post(
        page_url(grading_study, waiting), adjudication_post(grading_study, waiting, {"TF/R": "0"})
    )
    assert response.status_code == 302
    earlier.refresh_from_db()
    current = Grade.objects.get(kind=Grade.Kind.ADJUDICATION, eye="R", is_current=True)
    assert not earlier.is_current and earlier.superseded_by == current
    assert consensus_of(waiting, "TF", "R").option.value == "0"
    assert Grade.objects.filter(kind=Grade.Kind.ADJUDICATION).count() == 4


def test_the_service_refuses_users_without_the_permission_and_patients_of_other_studies(
    grading_study, waiting, named_graders, adjudicator
):
    answers = answers_where(grading_study, {"TF/R": "1"}, patient=waiting)
    attempt = {
        "study": grading_study,
        "patient": waiting,
        "answers": answers,
        "submission": str(uuid.uuid4()),
    }
    with pytest.raises(ValidationError) as refused:
        services.adjudication_submit(adjudicator=named_graders[0], **attempt)
    assert refused.value.code == "not_allowed"
    with pytest.raises(ValidationError) as refused:
        services.adjudication_submit(adjudicator=adjudicator, **{**attempt, "study": StudyFactory()})
    assert refused.value.code == "other_study"
    with pytest.raises(ValidationError) as refused:
        services.adjudication_submit(adjudicator=adjudicator, kind=Grade.Kind.REFERENCE, **attempt)
    assert refused.value.code == "wrong_kind"
    assert not Grade.objects.filter(kind__in=[Grade.Kind.ADJUDICATION, Grade.Kind.REFERENCE]).exists()


def test_every_form_of_the_study_gets_one_adjudication_grade(
    grading_study, follicles, named_graders, make_patients, adjudicator
):
    grading_study.grade_types.add(follicles)
    (patient,) = make_patients(grading_study, 1)
    disputed(grading_study, named_graders, patient, **{"Follicles present": "probably_not"})
    grades = services.adjudication_submit(
        study=grading_study,
        patient=patient,
        adjudicator=adjudicator,
        answers=answers_for(grading_study, patient=patient),
        submission=str(uuid.uuid4()),
    )
    assert sorted((g.grade_type.name[:3], g.eye) for g in grades) == [("Fol", ""), ("WHO", "L"), ("WHO", "R")]
    assert not Consensus.objects.filter(patient=patient, method=Consensus.Method.PENDING).exists()


@pytest.fixture
def certification(who, graders, make_patients):
    study = StudyFactory(graders_per_patient=2, repeat_share=0, is_certification=True)
    study.grade_types.add(who)
    study.graders.add(*graders)
    patients = make_patients(study, 3)
    disputed(study, graders, patients[0])
    return study, patients


def test_a_certification_set_takes_reference_grades_for_every_patient(certification, adjudicator, client_for):
    study, patients = certification
    before = list(Consensus.objects.order_by("pk").values_list("pk", "method", "option_id"))
    assert queued(study) == [p.pk for p in patients]  # every patient, not only disputed ones
    client = client_for(adjudicator)
    page = client.get(page_url(study, patients[1]))
    assert page.status_code == 200
    assert "grader1" not in page.content.decode()  # no trainee's answers next to the reference
    response = client.post(page_url(study, patients[1]), adjudication_post(study, patients[1], {"TF/R": "1"}))
    assert response.status_code == 302
    assert response["Location"] == page_url(study, patients[0])  # next without a reference grade
    saved = Grade.objects.filter(patient=patients[1], grader=adjudicator)
    assert set(saved.values_list("kind", flat=True)) == {Grade.Kind.REFERENCE} and saved.count() == 2
    assert list(Consensus.objects.order_by("pk").values_list("pk", "method", "option_id")) == before
    queue = selectors.adjudication_queue(study=study, page_number=1, per_page=10)
    assert [(row.patient_id, row.has_reference) for row in queue.rows][-1] == (patients[1].pk, True)
    (row,) = [r for r in selectors.adjudication_studies() if r.study == study]
    assert (row.patients, row.without_reference) == (3, 2)
    # Entered again, the user's reference grade is replaced, and its history kept.
    client.post(page_url(study, patients[1]), adjudication_post(study, patients[1], {"TF/R": "0"}))
    assert saved.count() == 4 and saved.filter(is_current=True).count() == 2


def test_pages_run_a_fixed_number_of_queries(
    grading_study, named_graders, make_patients, adjudicator, client_for, django_assert_max_num_queries
):
    """The same queries with 2 or 30 patients waiting: session, user, permissions, then the page's own."""
    client = client_for(adjudicator)
    patients = make_patients(grading_study, 30)
    urls = [index_url(), queue_url(grading_study), page_url(grading_study, patients[0])]
    most = [6, 10, 11]  # index: 1 query of its own; queue: study + 4; patient page: study, patient + 4

    for waiting in (2, 30):
        for patient in patients[:waiting]:
            if not selectors.adjudication_open(patient_id=patient.pk):
                disputed(grading_study, named_graders, patient)
        assert len(queued(grading_study)) == waiting
        for url, bound in zip(urls, most, strict=True):
            with django_assert_max_num_queries(bound):
                assert client.get(url).status_code == 200


def test_an_adjudicator_starts_on_the_adjudication_index_and_finds_its_link(
    grading_study, waiting, adjudicator, study_admin, client_for
):
    response = client_for(adjudicator).get(reverse("admin:index"))
    assert response.status_code == 302 and response["Location"] == index_url()
    assert client_for(study_admin).get(reverse("admin:index")).status_code == 200
    html = client_for(adjudicator).get(queue_url(grading_study)).content.decode()
    assert f'href="{index_url()}"' in html
    graders_page = client_for(grading_study.graders.first()).get(reverse("admin:grading_dashboard"))
    assert f'href="{index_url()}"' not in graders_page.content.decode()
