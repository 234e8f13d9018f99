"""Importing a whole field day: uploaded in parts, checked and stored in the background, all or nothing."""

import csv
import io
import json
import zipfile

import pytest
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.urls import reverse
from PIL import Image as PILImage

from studies.models import Image, ImageImport, Patient
from tests import images
from tests.factories import PatientFactory
from tests.storage import local_files


def zip_of(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def upload(django_capture_on_commit_callbacks):
    """Drive the import endpoints as the page's script does; return the final status."""

    def run(client, study, files: dict[str, bytes], source="zip", part_bytes=None):
        return _upload(client, study, files, source, part_bytes, django_capture_on_commit_callbacks)

    return run


def _upload(client, study, files, source, part_bytes, capture):
    start = client.post(
        reverse("admin:studies_study_import_start", args=[study.pk]),
        json.dumps({"source": source, "files": [{"path": p, "size": len(d)} for p, d in files.items()]}),
        content_type="application/json",
    )
    assert start.status_code == 201, start.content
    opened = start.json()
    size = part_bytes or opened["part_bytes"]
    assert size == opened["part_bytes"]
    sent = b"".join(files.values())  # a ZIP as it is, a folder's files one after the other
    order = opened["parts_first"] + [
        p for p in range(opened["parts_total"]) if p not in opened["parts_first"]
    ]
    for part in order:
        with capture(execute=True):
            response = client.post(  # as the page sends it: the part is the body
                f"{opened['part_url']}?part_index={part}",
                sent[part * size : (part + 1) * size],
                content_type="application/octet-stream",
            )
        if response.status_code != 200:  # refused already (a ZIP whose directory is refused)
            assert "no longer taking uploads" in response.json()["error"], response.content
            break
    with capture(execute=True):
        finish = client.post(opened["finish_url"])
    assert finish.status_code == 200, finish.content
    return client.get(opened["status_url"]).json()


FIELD_DAY = {
    "P001/R/a.jpg": images.jpeg(seed=1),
    "P001/L/b.jpg": images.jpeg(seed=2, gps=True),
    "P002/R/c.jpg": images.jpeg(seed=3),
    "P002/U/d.jpg": images.jpeg(seed=4),
}


@pytest.fixture
def importer(client_for, collector):
    return client_for(collector)


def test_zip_in_folder_layout_creates_patients_and_images(upload, importer, study, settings):
    settings.IMPORT_PART_BYTES = 1000  # several parts per file
    PatientFactory(study=study, code="P001")
    status = upload(importer, study, {"fieldday.zip": zip_of(FIELD_DAY)}, part_bytes=1000)
    assert status["status"] == "done", status["errors"]
    assert (status["patients_created"], status["images_created"]) == (1, 4)
    assert sorted(Patient.objects.filter(study=study).values_list("code", flat=True)) == ["P001", "P002"]
    eyes = {(i.patient.code, i.eye, i.original_name) for i in Image.objects.select_related("patient")}
    assert eyes == {
        ("P001", "R", "P001/R/a.jpg"),
        ("P001", "L", "P001/L/b.jpg"),
        ("P002", "R", "P002/R/c.jpg"),
        ("P002", "U", "P002/U/d.jpg"),
    }
    # the uploaded parts are gone once the import is done
    assert default_storage.listdir("imports/")[0] in ([], [str(status["id"])])
    assert default_storage.listdir(f"imports/{status['id']}/")[1] == []


def test_zip_of_a_wrapping_folder_with_junk_is_understood(upload, importer, study):
    entries = {f"day-2026-11-03/{path}": data for path, data in FIELD_DAY.items()}
    entries["day-2026-11-03/.DS_Store"] = b"junk"
    entries["__MACOSX/day-2026-11-03/P001/R/._a.jpg"] = b"junk"
    status = upload(importer, study, {"day.zip": zip_of(entries)})
    assert status["status"] == "done", status["errors"]
    assert status["images_created"] == 4


def test_flat_zip_with_a_csv_manifest(upload, importer, study):
    manifest = io.StringIO()
    writer = csv.writer(manifest)
    writer.writerow(["file", "patient_code", "eye"])
    writer.writerows([["IMG_1.JPG", "TR-9", "R"], ["IMG_2.JPG", "TR-9", "left"], ["IMG_3.JPG", "TR-10", "U"]])
    entries = {
        "manifest.csv": manifest.getvalue().encode(),
        "IMG_1.JPG": images.jpeg(seed=11),
        "IMG_2.JPG": images.jpeg(seed=12),
        "IMG_3.JPG": images.jpeg(seed=13),
    }
    status = upload(importer, study, {"flat.zip": zip_of(entries)})
    assert status["status"] == "done", status["errors"]
    assert sorted(Image.objects.values_list("patient__code", "eye")) == [
        ("TR-10", "U"),
        ("TR-9", "L"),
        ("TR-9", "R"),
    ]


def test_folder_upload_in_folder_layout(upload, importer, study):
    files = {f"fieldday/{path}": data for path, data in FIELD_DAY.items()}
    status = upload(importer, study, files, source="folder")
    assert status["status"] == "done", status["errors"]
    assert status["images_created"] == 4


@pytest.mark.parametrize("source", ["zip", "folder"])
def test_imported_photos_are_the_uploaded_bytes_or_cleaned_copies_of_them(upload, importer, study, source):
    clean = images.jpeg(seed=21, size=(80, 60))
    located = images.jpeg(seed=22, size=(80, 60), gps=True)
    turned = images.jpeg(seed=23, size=(80, 60), orientation=6)
    layout = {"P010/R/clean.jpg": clean, "P010/L/located.jpg": located, "P011/R/turned.jpg": turned}
    files = {"day.zip": zip_of(layout)} if source == "zip" else {f"day/{p}": d for p, d in layout.items()}
    status = upload(importer, study, files, source=source)
    assert status["status"] == "done", status["errors"]
    stored = {}
    for image in Image.objects.all():
        with default_storage.open(image.file.name) as stored_file:
            stored[image.original_name.rsplit("/", 1)[-1]] = stored_file.read()
    assert stored["clean.jpg"] == clean  # a clean photo is kept byte for byte
    assert b"GPS" not in stored["located.jpg"] and len(stored["located.jpg"]) < len(located)
    with (
        PILImage.open(io.BytesIO(stored["located.jpg"])) as cleaned,
        PILImage.open(io.BytesIO(located)) as sent,
    ):
        assert not cleaned.getexif() and cleaned.tobytes() == sent.tobytes()  # same pixels, no metadata
    with PILImage.open(io.BytesIO(stored["turned.jpg"])) as upright:
        assert upright.size == (60, 80) and not upright.getexif()


@pytest.mark.parametrize(
    ("bad_name", "bad_data", "reason"),
    [
        ("../x.jpg", images.jpeg(seed=50), "path leaves the archive's folder"),
        ("P003/R/notes.jpg", images.text_as_jpeg(), "not an image"),
        ("P003/R/half.jpg", images.truncated_jpeg(), "truncated"),
        ("P003/X/a.jpg", images.jpeg(seed=51), "layout"),
        ("P003/R/again.jpg", FIELD_DAY["P001/R/a.jpg"], "same file as P001/R/a.jpg"),
    ],
)
def test_one_bad_entry_refuses_the_import_and_stores_nothing(
    upload, importer, study, bad_name, bad_data, reason
):
    before = local_files()
    entries = {**FIELD_DAY, bad_name: bad_data}
    status = upload(importer, study, {"day.zip": zip_of(entries)})
    assert status["status"] == "failed"
    assert any(reason in error["reason"] for error in status["errors"]), status["errors"]
    assert Image.objects.count() == 0
    assert Patient.objects.count() == 0
    assert local_files() == before


def test_photo_already_in_the_study_refuses_the_import(upload, importer, study, collector):
    from studies.services import images_upload

    patient = PatientFactory(study=study, code="P009")
    images_upload(
        patient=patient,
        files=[("a.jpg", io.BytesIO(FIELD_DAY["P002/R/c.jpg"]))],
        eye="R",
        uploaded_by=collector,
    )
    status = upload(importer, study, {"day.zip": zip_of(FIELD_DAY)})
    assert status["status"] == "failed"
    assert "already in this study (patient P009" in status["errors"][0]["reason"]
    assert Image.objects.count() == 1


def test_not_a_zip_is_refused(upload, importer, study):
    status = upload(importer, study, {"day.zip": b"PK not really"})
    assert status["status"] == "failed"
    assert status["errors"] == [{"file": "day.zip", "reason": "not a readable ZIP file"}]


def test_manifest_listing_a_missing_file_is_refused(upload, importer, study):
    entries = {
        "manifest.csv": b"file,patient_code,eye\nIMG_1.JPG,TR-1,R\nIMG_9.JPG,TR-1,L\n",
        "IMG_1.JPG": images.jpeg(),
    }
    status = upload(importer, study, {"day.zip": zip_of(entries)})
    assert status["status"] == "failed"
    assert "IMG_9.JPG is listed but not in the upload" in status["errors"][0]["reason"]


def test_start_refuses_bad_requests(importer, study):
    url = reverse("admin:studies_study_import_start", args=[study.pk])
    cases = [
        ({"source": "zip", "files": []}, "No files were chosen"),
        ({"source": "zip", "files": [{"path": "a.jpg", "size": 3}]}, "exactly one .zip"),
        (
            {"source": "folder", "files": [{"path": "../etc/passwd", "size": 3}]},
            "not a path inside the upload",
        ),
        ({"source": "folder", "files": [{"path": "a.jpg", "size": -1}]}, "whole number of bytes"),
        ({"source": "tape", "files": [{"path": "a.jpg", "size": 1}]}, "Choose a ZIP file or a folder"),
    ]
    for body, message in cases:
        response = importer.post(url, json.dumps(body), content_type="application/json")
        assert response.status_code == 400
        assert message in response.json()["error"]
    assert importer.post(url, "not json", content_type="application/json").status_code == 400
    assert not ImageImport.objects.exists()


def test_oversized_import_is_refused_before_upload(upload, importer, study, settings):
    settings.IMPORT_MAX_BYTES = 100
    response = importer.post(
        reverse("admin:studies_study_import_start", args=[study.pk]),
        json.dumps({"source": "zip", "files": [{"path": "a.zip", "size": 101}]}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "Split the field day" in response.json()["error"]


def _opened_zip_of_25_bytes(importer, study) -> dict:
    return importer.post(
        reverse("admin:studies_study_import_start", args=[study.pk]),
        json.dumps({"source": "zip", "files": [{"path": "a.zip", "size": 25}]}),
        content_type="application/json",
    ).json()


def test_missing_part_and_wrong_part_size_are_refused(importer, study, settings):
    settings.IMPORT_PART_BYTES = 10
    opened = _opened_zip_of_25_bytes(importer, study)
    assert opened["parts_total"] == 3
    wrong = importer.post(opened["part_url"], {"part_index": 0, "data": io.BytesIO(b"123")})
    assert wrong.status_code == 400 and "10 were expected" in wrong.json()["error"]
    beyond = importer.post(opened["part_url"], {"part_index": 3, "data": io.BytesIO(b"1")})
    assert beyond.status_code == 400 and "no part number 3" in beyond.json()["error"]
    importer.post(opened["part_url"], {"part_index": 0, "data": io.BytesIO(b"0123456789")})
    finish = importer.post(opened["finish_url"])
    assert finish.status_code == 400
    assert "part 1, 2 of 3 did not arrive" in finish.json()["error"]
    assert ImageImport.objects.get().status == "uploading"


def test_a_part_sent_as_the_body_is_checked_before_it_is_stored(importer, study, settings):
    settings.IMPORT_PART_BYTES = 10
    opened = _opened_zip_of_25_bytes(importer, study)

    def send(query: str, body: bytes):
        return importer.post(f"{opened['part_url']}{query}", body, content_type="application/octet-stream")

    no_index = send("", b"0123456789")
    assert no_index.status_code == 400 and "part_index in its address" in no_index.json()["error"]
    not_a_number = send("?part_index=first", b"0123456789")
    assert not_a_number.status_code == 400 and "part_index in its address" in not_a_number.json()["error"]
    negative = send("?part_index=-1", b"0123456789")
    assert negative.status_code == 400
    too_long = send("?part_index=0", b"0123456789ABC")
    assert too_long.status_code == 400 and "at most 10" in too_long.json()["error"]
    short = send("?part_index=0", b"0123")
    assert short.status_code == 400 and "10 were expected" in short.json()["error"]
    beyond = send("?part_index=3", b"01234")
    assert beyond.status_code == 400 and "no part number 3" in beyond.json()["error"]
    assert ImageImport.objects.get().parts_received == []
    assert not default_storage.exists(f"imports/{opened['id']}/part-000000")

    sent = send("?part_index=1", b"ABCDEFGHIJ")
    assert sent.status_code == 200, sent.content
    assert ImageImport.objects.get().parts_received == [1]
    with default_storage.open(f"imports/{opened['id']}/part-000001") as stored:
        assert stored.read() == b"ABCDEFGHIJ"


def test_finishing_before_any_part_arrived_is_refused(importer, study):
    opened = importer.post(
        reverse("admin:studies_study_import_start", args=[study.pk]),
        json.dumps({"source": "zip", "files": [{"path": "a.zip", "size": 5}]}),
        content_type="application/json",
    ).json()
    finish = importer.post(opened["finish_url"])
    assert finish.status_code == 400
    assert "part 0 of 1 did not arrive" in finish.json()["error"]


def test_finishing_twice_processes_once(upload, importer, study):
    status = upload(importer, study, {"day.zip": zip_of(FIELD_DAY)})
    again = importer.post(reverse("admin:studies_imageimport_finish", args=[status["id"]]))
    assert again.status_code == 200
    assert again.json()["status"] == "done"
    assert Image.objects.count() == 4


def test_grader_and_data_team_cannot_import(client_for, grader, data_member, study):
    url = reverse("admin:studies_study_import_start", args=[study.pk])
    body = json.dumps({"source": "zip", "files": [{"path": "a.zip", "size": 1}]})
    assert client_for(grader).post(url, body, content_type="application/json").status_code == 403
    assert client_for(data_member).post(url, body, content_type="application/json").status_code == 403
    assert client_for(grader).get(reverse("admin:studies_study_import", args=[study.pk])).status_code == 403


def test_another_users_import_cannot_be_fed(client_for, importer, study):
    from tests.factories import UserFactory

    opened = importer.post(
        reverse("admin:studies_study_import_start", args=[study.pk]),
        json.dumps({"source": "zip", "files": [{"path": "a.zip", "size": 1}]}),
        content_type="application/json",
    ).json()
    other = client_for(UserFactory(username="collector2", groups=["Image collectors"]))
    response = other.post(opened["part_url"], {"part_index": 0, "data": io.BytesIO(b"1")})
    assert response.status_code == 403


def test_import_waits_for_the_database_worker(upload, importer, study, settings, monkeypatch):
    # The worker drops connections that look stale; the test's open transaction looks so on PostgreSQL.
    monkeypatch.setattr("django_tasks_db.management.commands.db_worker.close_old_connections", lambda: None)
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
    status = upload(importer, study, {"day.zip": zip_of(FIELD_DAY)})
    assert (status["status"], status["files_done"]) == ("checking", 0)
    assert Image.objects.count() == 0
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)
    after = importer.get(reverse("admin:studies_imageimport_status", args=[status["id"]])).json()
    assert after["status"] == "done", after["errors"]
    assert after["images_created"] == 4


def test_import_page_lists_recent_imports(upload, importer, study):
    status = upload(importer, study, {"day.zip": zip_of(FIELD_DAY)})
    page = importer.get(reverse("admin:studies_study_import", args=[study.pk]))
    assert page.status_code == 200
    assert f"#{status['id']}" in page.content.decode()
    assert "Done" in page.content.decode()


def test_storage_failure_while_storing_leaves_no_rows_and_no_files(upload, importer, study, monkeypatch):
    from studies.storage import PrivateFileSystemStorage

    real_save = PrivateFileSystemStorage._save
    calls = {"photos": 0}

    def failing_save(self, name, content):
        if name.startswith("images/"):
            calls["photos"] += 1
            if calls["photos"] == 3:
                raise OSError("bucket unreachable")
        return real_save(self, name, content)

    monkeypatch.setattr(PrivateFileSystemStorage, "_save", failing_save)
    status = upload(importer, study, {"day.zip": zip_of(FIELD_DAY)})
    assert status["status"] == "failed"
    assert "bucket unreachable" in status["errors"][0]["reason"]
    assert Image.objects.count() == 0 and Patient.objects.count() == 0
    assert not [f for f in local_files() if "/images/" in f or "/thumbnails/" in f]
