"""A grader at work in Chromium: log in, grade patients with the keyboard only, re-grade one."""

import io
import json
import re
from pathlib import Path

import pytest
from django.conf import settings

from accounts import roles
from grading import services
from grading.models import Grade, GradeEntry, Presentation
from studies.services import images_upload
from tests import images
from tests.factories import PatientFactory, StudyFactory, UserFactory

PASSWORD = "pass-word-123"  # tests.factories.UserFactory's password

# Transactional: the live server answers from another thread. The role groups are
# put back after each transactional test by tests/conftest.py.
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WHO_FIELDS = ["TF", "TI", "TS", "TT", "CO"]
# The digit pressed for an option: its place among the field's options.
DIGIT_OF = {"Absent": "1", "Present": "2", "Ungradable": "3"}


def who_grade_type(unit: str = "patient"):
    """The WHO grade type; graded per patient here unless asked (the fixture grades each eye)."""
    schemes = json.loads((Path(settings.BASE_DIR) / "fixtures" / "grade_types.json").read_text())
    (grade_type,) = services.grade_types_import(data={**schemes[0], "unit": unit})
    assert [field.name for field in grade_type.fields.order_by("order")] == WHO_FIELDS
    return grade_type


def grading_setup(patients: int, unit: str = "patient"):
    """A masked study graded with the WHO grade type, a grader on it, patients with a photo of each eye."""
    study = StudyFactory(
        name="Trachoma survey 2025", graders_per_patient=3, repeat_share=0, masked_codes=True
    )
    study.grade_types.add(who_grade_type(unit))
    grader = UserFactory(username="grader", groups=[roles.GRADERS])
    study.graders.add(grader)
    made = []
    for n in range(patients):
        patient = PatientFactory(study=study, code=f"SECRET-{n + 1:04d}")
        for eye, color in (("R", (200, 70, 80)), ("L", (80, 150, 200))):
            photo = images.jpeg((1600, 1200), color=color, seed=10 * n + (1 if eye == "R" else 2))
            images_upload(
                patient=patient, files=[(f"{eye}.jpg", io.BytesIO(photo))], eye=eye, uploaded_by=None
            )
        made.append(patient)
    return study, grader, made


@pytest.fixture
def failures(page):
    """Static files and photos the page asked for and did not get, and JavaScript errors."""
    found: list[str] = []

    def response(response):
        if ("/static/" in response.url or "/files/" in response.url) and response.status >= 400:
            found.append(f"{response.status} {response.url}")

    page.on("response", response)
    # A photo request the browser dropped itself, on moving to the next photo or page, is no failure.
    page.on(
        "requestfailed",
        lambda request: (
            "ERR_ABORTED" not in (request.failure or "") and found.append(f"failed {request.url}")
        ),
    )
    page.on("pageerror", lambda error: found.append(f"JavaScript error: {error}"))
    return found


@pytest.fixture
def posts(page):
    """The URLs of the POST requests the page sent."""
    sent: list[str] = []
    page.on("request", lambda request: request.method == "POST" and sent.append(request.url))
    return sent


def login_with_keyboard(page, live_server, user):
    """The real login form, typed in and sent with Enter; a grader lands on the grading dashboard."""
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.press("input[name=password]", "Enter")
    page.wait_for_url(f"{live_server.url}/admin/grading/")


def wait_for_grading_page(page) -> None:
    """grading.js has run: a field is highlighted and the photo is decoded."""
    page.wait_for_selector(".gc-field.gc-focused")
    page.wait_for_function(
        """() => {
            const img = document.getElementById("gc-main");
            return img && img.complete && img.naturalWidth > 0;
        }"""
    )


def focused_field(page) -> str:
    """The field grading.js highlights, which must also hold the keyboard focus ("TF", or "TF/R" per eye)."""
    return page.evaluate(
        """() => {
            const highlighted = Array.from(document.querySelectorAll(".gc-field.gc-focused"));
            if (highlighted.length !== 1) return `${highlighted.length} fields highlighted`;
            const field = highlighted[0];
            return field.dataset.name + (field.dataset.eye ? "/" + field.dataset.eye : "");
        }"""
    )


def chosen_labels(page) -> dict[str, str]:
    """Each field's checked option, by its label; a per-eye field's key names its eye ("TF/L")."""
    return page.evaluate(
        """() => Object.fromEntries(Array.from(document.querySelectorAll(".gc-field")).map((field) => {
            const input = field.querySelector("input:checked");
            const label = input ? input.closest("label").textContent : "";
            const key = field.dataset.name + (field.dataset.eye ? "/" + field.dataset.eye : "");
            return [key, label.trim().replace(/^\\d+\\s*/, "")];
        }))"""
    )


def answer_with_keys(page, answers: dict[str, str]) -> None:
    """Press one digit per field, from the highlighted one; each moves the highlight on."""
    for name, label in answers.items():
        assert focused_field(page) == name
        page.keyboard.press(DIGIT_OF[label])
    chosen = chosen_labels(page)
    assert {name: chosen[name] for name in answers} == answers


def save_with_enter(page) -> None:
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_load_state()


def follow_link_with_keyboard(page, link) -> None:
    """Give a link the focus (as Tab would) and press Enter on it: no click."""
    link.focus()
    assert link.evaluate("(a) => a === document.activeElement")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_load_state()


def bar_percent(page, selector: str) -> float:
    """How full a progress bar is drawn, in percent of its track."""
    return page.evaluate(
        """(selector) => {
            const bar = document.querySelector(selector);
            return 100 * bar.getBoundingClientRect().width / bar.parentElement.getBoundingClientRect().width;
        }""",
        selector,
    )


def patient_id_of(url: str) -> int:
    """The patient behind a grading page's opaque address (the address itself holds no id)."""
    match = re.search(r"/([0-9a-f-]{36})/$", url)
    assert match, url
    return Presentation.objects.get(key=match.group(1)).patient_id


def answers_in_db(grade: Grade) -> dict[str, str]:
    return {
        entry.field.name: entry.option.label
        for entry in GradeEntry.objects.filter(grade=grade).select_related("field", "option")
    }


def test_grader_grades_three_patients_with_the_keyboard_and_regrades_one(
    page, live_server, screenshot, failures, posts
):
    study, grader, patients = grading_setup(3)
    codes = [patient.code for patient in patients]

    login_with_keyboard(page, live_server, grader)
    card = page.locator(f".gc-study-card[data-study='{study.pk}']")
    assert card.locator(".gc-graded").inner_text() == "0"
    assert card.locator(".gc-to-grade").inner_text() == "3"
    assert card.locator(".progress-bar").inner_text().strip() == "0%"
    assert bar_percent(page, f".gc-study-card[data-study='{study.pk}'] .progress-bar") < 1
    screenshot("01-dashboard-before")

    start = card.get_by_role("link", name="Start")
    follow_link_with_keyboard(page, start)
    assert re.search(rf"/admin/grading/study/{study.pk}/[0-9a-f-]{{36}}/$", page.url), page.url

    # Three patients, each answered with one digit per field and saved with Enter.
    keyed = [
        {"TF": "Present", "TI": "Absent", "TS": "Absent", "TT": "Absent", "CO": "Absent"},
        {"TF": "Absent", "TI": "Absent", "TS": "Present", "TT": "Absent", "CO": "Ungradable"},
        {"TF": "Ungradable", "TI": "Ungradable", "TS": "Absent", "TT": "Present", "CO": "Absent"},
    ]
    graded_ids = []
    for number, answers in enumerate(keyed, start=1):
        wait_for_grading_page(page)
        graded_ids.append(patient_id_of(page.url))
        # Masked: the label counts, the code shows nowhere (page, photo addresses, title).
        assert page.locator(".breadcrumb-item.active").inner_text().strip() == f"Patient {number} of 3"
        assert page.locator(".app-content-header h1").inner_text().strip() == f"Patient {number} of 3"
        content = page.content()
        assert not [code for code in codes if code in content]
        assert not [code for code in codes if code in page.title()]
        progress_text = page.locator("#gc-progress-text").inner_text()
        assert progress_text == f"{number - 1} graded, {4 - number} to go"
        assert page.locator("#gc-progress-bar").get_attribute("style") == (
            f"width: {round(100 * (number - 1) / 3)}%"
        )
        assert chosen_labels(page) == dict.fromkeys(WHO_FIELDS, "")
        assert focused_field(page) == "TF"
        assert page.evaluate("() => document.activeElement.dataset.name") == "TF"
        if number == 1:
            screenshot("02-grading-page-fresh")
            viewer_keys_work(page)
        answer_with_keys(page, dict(list(answers.items())[:4]))
        assert focused_field(page) == "CO"  # the last field, with its definition shown
        assert page.locator(".gc-field[data-name=CO] .gc-help").is_visible()
        assert not page.locator(".gc-field[data-name=TF] .gc-help").is_visible()
        page.keyboard.press(DIGIT_OF[answers["CO"]])
        assert chosen_labels(page) == answers
        assert page.evaluate("() => document.activeElement.id") == "gc-save"
        if number == 1:
            screenshot("03-grading-answers-chosen")
        save_with_enter(page)

    # All graded: the queue sends the grader to the study's page with its progress full.
    assert page.url == f"{live_server.url}/admin/grading/study/{study.pk}/"
    messages = " ".join(page.locator(".alert-success, .alert").all_inner_texts())
    assert "You have graded every patient of this study" in messages
    assert page.locator("#gc-graded").inner_text() == "3"
    assert page.locator("#gc-to-grade").inner_text() == "0"
    assert page.locator("#gc-progress-bar").inner_text().strip() == "100%"
    assert bar_percent(page, "#gc-progress-bar") > 99
    graded_list = page.locator("#gc-graded-list li")
    assert graded_list.count() == 3
    assert [text.split()[:2] for text in graded_list.all_inner_texts()] == [
        ["Patient", "#1"],
        ["Patient", "#2"],
        ["Patient", "#3"],
    ]
    content = page.content()
    assert not [code for code in codes if code in content]
    screenshot("04-study-progress-after")

    page.goto(f"{live_server.url}/admin/grading/")
    card = page.locator(f".gc-study-card[data-study='{study.pk}']")
    assert card.locator(".gc-graded").inner_text() == "3"
    assert card.locator(".gc-to-grade").inner_text() == "0"
    assert card.locator(".progress-bar").inner_text().strip() == "100%"
    assert bar_percent(page, f".gc-study-card[data-study='{study.pk}'] .progress-bar") > 99
    assert card.get_by_text("Done").is_visible()
    screenshot("05-dashboard-after")

    # Re-grade the first patient graded, from the "Graded by you" list.
    page.goto(f"{live_server.url}/admin/grading/study/{study.pk}/")
    regrade = page.locator("#gc-graded-list li").first.get_by_role("button", name="Re-grade")
    assert regrade.evaluate("(b) => b.form.action").endswith(f"/admin/grading/study/{study.pk}/regrade/1/")
    follow_link_with_keyboard(page, regrade)
    wait_for_grading_page(page)
    assert patient_id_of(page.url) == graded_ids[0]
    assert page.locator(".app-content-header h1").inner_text().strip() == "Re-grading Patient #1"
    assert not [code for code in codes if code in page.content()]
    assert page.locator("#gc-progress-text").inner_text() == "3 graded, 0 to go"
    assert chosen_labels(page) == keyed[0]  # the earlier answers, to change
    assert focused_field(page) == "TF"
    page.keyboard.press(DIGIT_OF["Absent"])  # TF; moves on to TI
    page.keyboard.press("ArrowDown")  # skip TI, keep its answer
    assert focused_field(page) == "TS"
    page.keyboard.press(DIGIT_OF["Present"])  # TS
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    assert focused_field(page) == "TI"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert focused_field(page) == "TT"
    page.keyboard.press("Shift+Tab")
    assert focused_field(page) == "TS"
    page.keyboard.press("n")  # a note, typed, then back to the fields with Escape
    assert page.evaluate("() => document.activeElement.id") == "gc-note"
    page.keyboard.type("TF was a shadow; scarring on second look.")
    page.keyboard.press("Escape")
    assert focused_field(page) == "TS"
    regraded = {"TF": "Absent", "TI": "Absent", "TS": "Present", "TT": "Absent", "CO": "Absent"}
    assert chosen_labels(page) == regraded
    screenshot("06-regrade-page")
    save_with_enter(page)
    assert page.url == f"{live_server.url}/admin/grading/study/{study.pk}/"
    assert "Saved." in " ".join(page.locator(".alert").all_inner_texts())
    assert page.locator("#gc-graded").inner_text() == "3"
    screenshot("07-study-after-regrade")

    # History kept: three current regular grades, the re-graded one superseding the first.
    grades = Grade.objects.filter(grader=grader)
    current = grades.filter(kind=Grade.Kind.REGULAR, is_current=True)
    assert current.count() == 3
    assert sorted(current.values_list("patient_id", flat=True)) == sorted(p.pk for p in patients)
    assert sorted(graded_ids) == sorted(p.pk for p in patients)
    assert not grades.exclude(kind=Grade.Kind.REGULAR).exists()
    (old,) = grades.filter(is_current=False)
    new = current.get(patient_id=graded_ids[0])
    assert old.patient_id == graded_ids[0]
    assert old.superseded_by == new
    assert answers_in_db(old) == keyed[0]
    assert answers_in_db(new) == regraded
    assert new.note == "TF was a shadow; scarring on second look."
    for patient_id, answers in zip(graded_ids[1:], keyed[1:], strict=True):
        assert answers_in_db(current.get(patient_id=patient_id)) == answers
    assert len(posts) == 6  # login, three grades, the re-grade button and the re-grade: one POST per Enter
    assert failures == []


def viewer_keys_work(page) -> None:
    """Next photo, zoom, brightness and the resets, by key; the highlighted field stays."""
    main = page.locator("#gc-main")
    eye = page.locator("#gc-eye")
    count = page.locator("#gc-image-count")
    first_eye, first_src = eye.inner_text(), main.get_attribute("src")
    assert first_eye in ("Right eye", "Left eye")
    assert count.inner_text() == "photo 1 of 2"
    assert page.locator(".gc-strip-item").count() == 2

    page.keyboard.press("ArrowRight")
    assert count.inner_text() == "photo 2 of 2"
    assert eye.inner_text() == ({"Right eye", "Left eye"} - {first_eye}).pop()
    assert main.get_attribute("src") != first_src
    assert "active" in page.locator(".gc-strip-item").nth(1).get_attribute("class")
    page.wait_for_function("() => document.getElementById('gc-main').complete")
    assert main.evaluate("(img) => img.naturalWidth") == 1600

    transform = main.evaluate("(img) => img.style.transform")
    assert "scale(1)" in transform
    page.keyboard.press("+")
    zoomed = main.evaluate("(img) => img.style.transform")
    assert zoomed != transform
    assert "scale(1.25)" in zoomed
    page.keyboard.press("b")
    assert main.evaluate("(img) => img.style.filter") == "brightness(110%) contrast(100%)"
    page.keyboard.press("c")
    assert main.evaluate("(img) => img.style.filter") == "brightness(110%) contrast(110%)"
    page.keyboard.press("0")
    assert "scale(1)" in main.evaluate("(img) => img.style.transform")
    page.keyboard.press("r")
    assert main.evaluate("(img) => img.style.filter") == "brightness(100%) contrast(100%)"
    page.keyboard.press("ArrowLeft")
    assert count.inner_text() == "photo 1 of 2"
    assert eye.inner_text() == first_eye
    # None of it answered a field or moved the highlight.
    assert focused_field(page) == "TF"
    assert chosen_labels(page) == dict.fromkeys(WHO_FIELDS, "")


def test_enter_with_a_required_field_empty_saves_nothing(page, live_server, screenshot, failures, posts):
    study, grader, _patients = grading_setup(1)
    login_with_keyboard(page, live_server, grader)
    page.goto(f"{live_server.url}/admin/grading/study/{study.pk}/next/")
    wait_for_grading_page(page)
    url = page.url
    assert focused_field(page) == "TF"

    page.keyboard.press("1")  # TF
    page.keyboard.press("1")  # TI
    page.keyboard.press("ArrowDown")  # TS left empty
    page.keyboard.press("1")  # TT
    page.keyboard.press("1")  # CO
    assert chosen_labels(page) == {"TF": "Absent", "TI": "Absent", "TS": "", "TT": "Absent", "CO": "Absent"}
    posts_before = len(posts)
    page.keyboard.press("Enter")

    # The page's own check stops the form: TS outlined in red and highlighted again.
    page.wait_for_selector(".gc-field[data-name=TS].gc-invalid")
    assert page.locator(".gc-field.gc-invalid").count() == 1
    assert focused_field(page) == "TS"
    assert page.evaluate("() => document.activeElement.dataset.name") == "TS"
    border = page.locator(".gc-field[data-name=TS]").evaluate("(f) => getComputedStyle(f).borderTopColor")
    assert border == "rgb(220, 53, 69)", border
    assert page.locator("#gc-save").is_enabled()
    page.wait_for_timeout(500)  # a submission would have left by now
    assert page.url == url
    assert len(posts) == posts_before
    assert not Grade.objects.exists()
    screenshot("01-required-field-missing")

    # Answering it clears the mark; Enter then saves once.
    page.keyboard.press("2")  # TS present
    assert page.locator(".gc-field.gc-invalid").count() == 0
    save_with_enter(page)
    assert page.url == f"{live_server.url}/admin/grading/study/{study.pk}/"
    (grade,) = Grade.objects.filter(grader=grader)
    assert answers_in_db(grade) == {
        "TF": "Absent",
        "TI": "Absent",
        "TS": "Present",
        "TT": "Absent",
        "CO": "Absent",
    }
    assert failures == []


def test_a_grader_beaten_to_the_last_slot_is_told_and_sent_on(page, live_server, screenshot, failures):
    """Two pages of one patient, one slot wanted: the second save is refused in words, not lost silently."""
    from django.utils import timezone

    from tests.grading_support import answers_for, present

    study, grader, patients = grading_setup(2)
    study.graders_per_patient = 1
    study.randomized_order = False
    study.save()
    services.queues_refresh(study=study)  # as the study page does when the rules change
    other = UserFactory(username="other-grader", groups=[roles.GRADERS])
    study.graders.add(other)
    login_with_keyboard(page, live_server, grader)
    page.goto(f"{live_server.url}/admin/grading/study/{study.pk}/next/")
    wait_for_grading_page(page)
    first_page_url = page.url
    assert patient_id_of(first_page_url) == patients[0].pk
    # The other grader had the same patient open from before (an expired hold) and saves first.
    Presentation.objects.filter(patient=patients[0]).update(reserved_until=timezone.now())
    theirs = present(study, patients[0], other)
    services.grade_submit(presentation=theirs, grader=other, answers=answers_for(study))

    answer_with_keys(page, dict.fromkeys(WHO_FIELDS, "Absent"))
    save_with_enter(page)
    wait_for_grading_page(page)
    assert patient_id_of(page.url) == patients[1].pk  # sent on to the next patient
    warning = " ".join(page.locator(".alert").all_inner_texts())
    assert "already has its 1 grader(s), so your answers were not saved" in warning
    assert page.locator(".app-content-header h1").inner_text().strip() == "Patient 1 of 1"
    screenshot("01-refused-and-sent-on")
    assert not Grade.objects.filter(grader=grader).exists()

    # Back to the first page: it says what happened, and offers the next patient instead of a form.
    answer_with_keys(page, dict.fromkeys(WHO_FIELDS, "Absent"))
    save_with_enter(page)
    page.goto(first_page_url)
    assert "got its graders meanwhile" in page.locator(".gc-notice").inner_text()
    assert page.locator("#gc-form").count() == 0 and page.locator("#gc-regrade").count() == 0
    assert page.locator("#gc-next").is_visible()
    screenshot("02-old-page-of-a-full-patient")
    assert failures == []


def test_a_per_eye_grade_type_is_answered_eye_by_eye_beside_that_eyes_photos(
    page, live_server, screenshot, failures
):
    """The WHO fixture grades each eye: right eye's fields, then the left eye's, then Enter saves both."""
    study, grader, (patient,) = grading_setup(1, unit="eye")
    login_with_keyboard(page, live_server, grader)
    page.goto(f"{live_server.url}/admin/grading/study/{study.pk}/next/")
    wait_for_grading_page(page)
    badges = page.locator(".gc-form-eye").all_inner_texts()
    assert [badge.strip() for badge in badges] == ["Right eye", "Left eye"]
    assert focused_field(page) == "TF/R"
    assert page.locator("#gc-eye").inner_text() == "Right eye"  # the viewer shows the eye being graded
    right = {"TF": "Present", "TI": "Absent", "TS": "Absent", "TT": "Absent", "CO": "Absent"}
    left = {"TF": "Absent", "TI": "Absent", "TS": "Present", "TT": "Absent", "CO": "Ungradable"}
    for name, label in right.items():
        assert focused_field(page) == f"{name}/R"
        page.keyboard.press(DIGIT_OF[label])
    assert focused_field(page) == "TF/L"
    assert page.locator("#gc-eye").inner_text() == "Left eye"  # moved on with the form
    assert page.locator(".gc-strip-item.active").get_attribute("data-eye-code") == "L"
    screenshot("01-per-eye-left-eye-form")
    for label in left.values():
        page.keyboard.press(DIGIT_OF[label])
    chosen = chosen_labels(page)
    assert {name: chosen[f"{name}/R"] for name in WHO_FIELDS} == right
    assert {name: chosen[f"{name}/L"] for name in WHO_FIELDS} == left
    page.locator(".gc-field[data-name=TT][data-eye=L]").focus()
    for _ in range(4):  # back up into the right eye's form: the viewer follows
        page.keyboard.press("ArrowUp")
    assert focused_field(page) == "CO/R"
    assert page.locator("#gc-eye").inner_text() == "Right eye"
    page.locator("#gc-save").focus()
    save_with_enter(page)
    assert page.url == f"{live_server.url}/admin/grading/study/{study.pk}/"
    grades = {grade.eye: grade for grade in Grade.objects.filter(grader=grader, patient=patient)}
    assert set(grades) == {"R", "L"}
    assert answers_in_db(grades["R"]) == right
    assert answers_in_db(grades["L"]) == left
    assert failures == []
