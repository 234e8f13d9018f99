"""The admin as staff use it in Chromium: log in, set up a study, upload photos, import a field day."""

import re
import zipfile
from pathlib import Path

import pytest

from accounts import roles
from studies.models import Image, ImageImport, Patient, Region, Study
from tests import images
from tests.factories import StudyFactory, UserFactory

# Transactional: the live server answers from another thread. The role groups are
# put back after each transactional test by tests/conftest.py.
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def study_admin():
    return UserFactory(username="studyadmin", groups=[roles.STUDY_ADMINISTRATORS])


def write_jpegs(folder: Path, count: int) -> list[Path]:
    paths = []
    for n in range(count):
        path = folder / f"eye-{n + 1}.jpg"
        path.write_bytes(images.jpeg((640, 480), color=(200, 60 + 40 * n, 90), seed=n + 1))
        paths.append(path)
    return paths


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def assert_theme_loaded(page) -> None:
    """Jazzmin's stylesheets applied: a fixed dark sidebar and coloured buttons, no missing static file."""
    styles = page.evaluate(
        """() => {
            const sidebar = document.querySelector("aside.app-sidebar, aside.main-sidebar");
            const button = document.querySelector(".btn-success, .btn-primary, .btn-info");
            const s = sidebar && getComputedStyle(sidebar);
            return {
                sidebarPosition: s && s.position,
                sidebarBackground: s && s.backgroundColor,
                buttonBackground: button && getComputedStyle(button).backgroundColor,
                sheets: Array.from(document.styleSheets).map((sheet) => sheet.href || "").filter(Boolean),
            };
        }"""
    )
    assert any("adminlte" in href for href in styles["sheets"]), styles
    assert any("gradingcenter/admin.css" in href for href in styles["sheets"]), styles
    assert styles["sidebarPosition"] in ("fixed", "sticky"), styles
    assert styles["sidebarBackground"] not in (None, "rgba(0, 0, 0, 0)", "rgb(255, 255, 255)"), styles
    assert styles["buttonBackground"] not in (None, "rgba(0, 0, 0, 0)", "rgb(239, 239, 239)"), styles


def wait_for_full_progress_bar(page) -> None:
    """The import's progress bar has finished its CSS transition to 100%."""
    page.wait_for_function(
        """() => {
            const bar = document.getElementById("gc-import-bar");
            return bar.textContent === "100%"
                && bar.getBoundingClientRect().width >= bar.parentElement.getBoundingClientRect().width - 1;
        }"""
    )


@pytest.fixture
def static_failures(page):
    """Static files the page asked for and did not get."""
    failures: list[str] = []
    page.on(
        "response",
        lambda response: (
            "/static/" in response.url
            and response.status >= 400
            and failures.append(f"{response.status} {response.url}")
        ),
    )
    # A request the browser dropped itself (the upload script replaces the page) is no failure.
    page.on(
        "requestfailed",
        lambda request: (
            "/static/" in request.url
            and "ERR_ABORTED" not in (request.failure or "")
            and failures.append(f"{request.url} ({request.failure})")
        ),
    )
    return failures


def test_study_admin_sets_up_a_study_and_uploads_three_photos(
    page, live_server, admin_login, screenshot, static_failures, tmp_path
):
    user = study_admin()
    admin_login(user)
    assert_theme_loaded(page)
    screenshot("01-admin-index")

    # A region, through its add page.
    page.goto(f"{live_server.url}/admin/studies/region/add/")
    page.fill("#id_name", "Amhara")
    page.fill("#id_country", "Ethiopia")
    page.click("input[name=_save]")
    page.wait_for_url(re.compile(r"/admin/studies/region/$"))
    assert page.locator(".alert-success").count() == 1

    # The study in that region.
    page.goto(f"{live_server.url}/admin/studies/study/add/")
    page.fill("#id_name", "Trachoma 2025")
    page.select_option("#id_region", label="Amhara (Ethiopia)")
    page.fill("#id_description", "Follow-up survey, eyelid photos of both eyes.")
    screenshot("02-study-add-filled")
    page.click("input[name=_continue]")
    page.wait_for_url(re.compile(r"/admin/studies/study/\d+/change/$"))
    study = Study.objects.get(name="Trachoma 2025")
    assert study.region == Region.objects.get(name="Amhara")
    assert study.created_by == user
    assert page.locator("#gc-import-link").is_visible()
    assert_theme_loaded(page)
    screenshot("03-study-saved")

    # A patient with three photos of the left eye.
    photos = write_jpegs(tmp_path, 3)
    page.goto(f"{live_server.url}/admin/studies/patient/add/")
    page.select_option("#id_study", label="Trachoma 2025")
    page.fill("#id_code", "AM-0001")
    page.fill("#id_age_years", "7")
    page.select_option("#id_sex", "F")
    page.select_option("#id_new_images_eye", "L")
    page.set_input_files("input.gc-upload-input", [str(path) for path in photos])
    assert "3 photo(s) chosen" in page.locator("#gc-dropzone").inner_text()
    screenshot("04-patient-add-photos-chosen")
    page.click("input[name=_continue]")
    page.wait_for_url(re.compile(r"/admin/studies/patient/\d+/change/$"))
    # The upload script writes the saved page in place once its request is done.
    page.locator(".alert-success", has_text="3 photo(s) added to AM-0001.").wait_for()

    patient = Patient.objects.get(study=study, code="AM-0001")
    stored = list(Image.objects.filter(patient=patient))
    assert len(stored) == 3
    assert {image.eye for image in stored} == {"L"}
    assert {image.original_name for image in stored} == {path.name for path in photos}

    thumbnails = page.locator("img.gc-thumb")
    assert thumbnails.count() == 3
    thumbnails.last.scroll_into_view_if_needed()  # they load lazily
    page.wait_for_function(
        """() => {
            const thumbs = Array.from(document.querySelectorAll("img.gc-thumb"));
            return thumbs.length === 3 && thumbs.every((img) => img.complete && img.naturalWidth > 0);
        }"""
    )
    sizes = thumbnails.evaluate_all("(imgs) => imgs.map((img) => [img.naturalWidth, img.naturalHeight])")
    assert all(width > 0 and height > 0 for width, height in sizes), sizes
    assert_theme_loaded(page)
    screenshot("05-patient-saved-thumbnails")
    assert static_failures == []


def test_a_batch_with_a_text_file_is_refused_whole(
    page, live_server, admin_login, screenshot, static_failures, tmp_path
):
    study = StudyFactory(name="Refusal study")
    admin_login(study_admin())
    good = tmp_path / "good.jpg"
    good.write_bytes(images.jpeg((640, 480), seed=11))
    bad = tmp_path / "patient-list.jpg"
    bad.write_bytes(images.text_as_jpeg())

    page.goto(f"{live_server.url}/admin/studies/patient/add/")
    page.select_option("#id_study", label=study.name)
    page.fill("#id_code", "AM-0099")
    page.set_input_files("input.gc-upload-input", [str(good), str(bad)])
    screenshot("01-patient-add-bad-batch-chosen")
    page.click("input[name=_continue]")

    errors = page.locator(".errorlist", has_text="Nothing was stored")
    errors.wait_for()
    text = errors.inner_text()
    assert "1 file(s) refused" in text
    assert "patient-list.jpg" in text
    assert "not an image" in text
    assert "good.jpg" not in text
    assert errors.is_visible()
    assert re.search(r"/admin/studies/patient/add/$", page.url)
    assert_theme_loaded(page)
    screenshot("02-refusal-shown")

    assert Image.objects.count() == 0
    assert not Patient.objects.filter(code="AM-0099").exists()
    assert static_failures == []


def test_the_add_page_reports_the_photos_it_stored(page, live_server, admin_login, screenshot, tmp_path):
    study = StudyFactory(name="Message study")
    admin_login(study_admin())
    (photo,) = write_jpegs(tmp_path, 1)
    page.goto(f"{live_server.url}/admin/studies/patient/add/")
    page.select_option("#id_study", label=study.name)
    page.fill("#id_code", "AM-0042")
    page.set_input_files("input.gc-upload-input", str(photo))
    page.click("input[name=_continue]")
    page.wait_for_url(re.compile(r"/admin/studies/patient/\d+/change/$"))
    page.locator(".alert-success").first.wait_for()
    assert Image.objects.filter(patient__code="AM-0042").count() == 1
    screenshot("01-after-save")
    messages = " ".join(page.locator(".alert-success").all_inner_texts())
    assert "1 photo(s) added to AM-0042." in messages


def open_import_page(page, live_server, study):
    page.goto(f"{live_server.url}/admin/studies/study/{study.pk}/change/")
    page.click("#gc-import-link")
    page.wait_for_url(re.compile(rf"/admin/studies/study/{study.pk}/import/$"))
    assert page.locator("#gc-import-start").is_disabled()


def record_progress(page) -> None:
    """Keep every text and width the import's progress bar shows, from the first change."""
    page.evaluate(
        """() => {
            window.gcProgress = [];
            const bar = document.getElementById("gc-import-bar");
            const stage = document.getElementById("gc-import-stage");
            new MutationObserver(() => window.gcProgress.push(
                {percent: parseInt(bar.textContent, 10), stage: stage.textContent}
            )).observe(document.getElementById("gc-import-progress-box"),
                       {subtree: true, childList: true, characterData: true, attributes: true});
        }"""
    )


def test_field_day_zip_import(
    page, live_server, admin_login, screenshot, static_failures, tmp_path, settings
):
    settings.IMPORT_PART_BYTES = 64 * 1024  # several parts, sent three at a time, directory first
    study = StudyFactory(name="Field day study")
    admin_login(study_admin())
    archive = write_zip(
        tmp_path / "field-day.zip",
        {
            "P001/R/a.jpg": images.jpeg((640, 480), seed=21),
            "P001/L/b.jpg": images.jpeg((640, 480), seed=22),
            "P002/R/c.jpg": images.jpeg((640, 480), seed=23),
        },
    )

    open_import_page(page, live_server, study)
    assert_theme_loaded(page)
    screenshot("01-import-page")
    page.set_input_files("#gc-import-zip", str(archive))
    assert page.locator("#gc-import-chosen").inner_text() == "field-day.zip"
    record_progress(page)
    page.click("#gc-import-start")

    report = page.locator("#gc-import-report .alert")
    report.wait_for()
    text = report.inner_text()
    assert "Imported." in text, text
    shown = page.evaluate("window.gcProgress")
    percents = [step["percent"] for step in shown if step["percent"] == step["percent"]]
    assert percents == sorted(percents), f"the bar went back: {percents}"
    assert shown[0]["stage"].startswith("Starting the upload of"), "something shows from the first moment"
    assert any(step["stage"].startswith("Uploading ") for step in shown), [step["stage"] for step in shown]
    assert "3 photo(s) stored" in text
    assert "2 new patient(s) created" in text
    assert "alert-success" in report.get_attribute("class")
    wait_for_full_progress_bar(page)
    screenshot("02-import-done")

    image_import = ImageImport.objects.get(study=study)
    assert image_import.status == ImageImport.Status.DONE
    assert sorted(Patient.objects.filter(study=study).values_list("code", flat=True)) == ["P001", "P002"]
    assert sorted(Image.objects.filter(study=study).values_list("patient__code", "eye")) == [
        ("P001", "L"),
        ("P001", "R"),
        ("P002", "R"),
    ]
    assert static_failures == []


def test_field_day_zip_with_a_non_image_imports_nothing(
    page, live_server, admin_login, screenshot, static_failures, tmp_path
):
    study = StudyFactory(name="Field day refusal study")
    admin_login(study_admin())
    archive = write_zip(
        tmp_path / "field-day-bad.zip",
        {
            "P001/R/a.jpg": images.jpeg((640, 480), seed=31),
            "P001/R/notes.txt": b"Camera battery died after P001.\n",
            "P002/L/c.jpg": images.jpeg((640, 480), seed=33),
        },
    )

    open_import_page(page, live_server, study)
    page.set_input_files("#gc-import-zip", str(archive))
    page.click("#gc-import-start")

    report = page.locator("#gc-import-report .alert")
    report.wait_for()
    text = report.inner_text()
    assert "Nothing was imported." in text, text
    assert "P001/R/notes.txt" in text
    assert "not an image" in text
    assert "alert-danger" in report.get_attribute("class")
    wait_for_full_progress_bar(page)
    assert page.locator("#gc-import-start").is_disabled(), "the refused file is not offered again"
    assert page.locator("#gc-import-zip").input_value() == ""
    screenshot("01-import-refused")

    assert ImageImport.objects.get(study=study).status == ImageImport.Status.FAILED
    assert not Patient.objects.filter(study=study).exists()
    assert not Image.objects.filter(study=study).exists()
    assert static_failures == []
