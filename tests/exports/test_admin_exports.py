"""The admin's Export and Import buttons, and API tokens issued from the users list, as a user gets them.

Every request goes through the admin pages with the Django test client: the
export form is read from the page as a browser would submit it, the file
that comes back is parsed (CSV, JSON, XLSX) and compared with the rows of
the filtered list.
"""

import csv
import io
import json
import re
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
from types import SimpleNamespace
from urllib.parse import urljoin

import openpyxl
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from knox.models import AuthToken

from studies.models import Patient
from studies.services import images_upload
from tests import images
from tests.factories import PatientFactory, StudyFactory
from tests.grading_support import submit

FORMATS = ["csv", "json", "xlsx"]
WHO_FIELDS = ["TF", "TI", "TS", "TT", "CO"]
WIDE = "Grades, one row per grade (wide)"
LONG = "Grades, one row per answer (long)"
GRADE_FILTER = "patient__study__id__exact"


# Pages and files -----------------------------------------------------------


@dataclass
class Form:
    """One form of a page: where it posts and what a browser would send if submitted as it stands."""

    id: str | None
    action: str
    data: dict[str, list[str]] = field(default_factory=dict)
    choices: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)

    def choose(self, name: str, label: str) -> None:
        values = [value for value, text in self.choices[name] if text == label]
        assert values, f"no option {label!r} in {name}: {self.choices[name]}"
        self.data[name] = values[:1]

    def target(self, page_url: str) -> str:
        """The URL the browser posts to: an empty action is the page's own URL, querystring included."""
        return urljoin(page_url, self.action)


class _FormReader(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._select: str | None = None
        self._selected: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self._form = Form(id=attrs.get("id"), action=attrs.get("action") or "")
            self.forms.append(self._form)
            return
        form, name = self._form, attrs.get("name")
        if form is None or not name and tag != "option":
            return
        if tag == "input":
            kind = (attrs.get("type") or "text").lower()
            if kind == "file":
                form.files.add(name)
            elif kind in ("checkbox", "radio"):
                if "checked" in attrs:
                    form.data.setdefault(name, []).append(attrs.get("value") or "on")
            elif kind not in ("submit", "button", "reset", "image"):
                form.data.setdefault(name, []).append(attrs.get("value") or "")
        elif tag == "select":
            self._select, self._selected = name, []
            form.choices[name] = []
        elif tag == "option" and self._select:
            form.choices[self._select].append((attrs.get("value") or "", ""))
            if "selected" in attrs:
                self._selected.append(attrs.get("value") or "")

    def handle_data(self, data):
        if self._form and self._select and self._form.choices[self._select]:
            options = self._form.choices[self._select]
            value, text = options[-1]
            options[-1] = (value, (text + data).strip())

    def handle_endtag(self, tag):
        if tag == "select" and self._form and self._select:
            options = self._form.choices[self._select]
            chosen = self._selected or [value for value, _ in options[:1]]  # a browser sends the first
            self._form.data[self._select] = chosen
            self._select = None
        elif tag == "form":
            self._form = None


def form_of(response, *, form_id: str | None = None, having: str | None = None) -> Form:
    """The form with this id, or the one with a field of this name."""
    reader = _FormReader()
    reader.feed(response.content.decode())
    for form in reader.forms:
        names = set(form.data) | set(form.choices) | form.files
        if (form_id and form.id == form_id) or (having and having in names):
            return form
    raise AssertionError(f"no form {form_id or having!r} on the page")


def export_link(client, changelist_url: str) -> str:
    """The href of the changelist's Export button."""
    response = client.get(changelist_url)
    assert response.status_code == 200
    match = re.search(r'<a href="([^"]*)" class="export_link', response.content.decode())
    assert match, "the list has no Export button"
    return unescape(match.group(1))


@dataclass
class Table:
    header: list[str]
    rows: list[dict[str, str]]


def _cell(value) -> str:
    return "" if value is None else str(value)


def table_of(response, fmt: str) -> Table:
    """The downloaded file, parsed: every cell as text, a missing value as ''."""
    assert response.status_code == 200, response.content[:500]
    disposition = response.get("Content-Disposition", "")
    assert disposition.startswith("attachment;") and disposition.endswith(f'.{fmt}"'), disposition
    if fmt == "csv":
        header, *lines = list(csv.reader(io.StringIO(response.content.decode("utf-8"))))
    elif fmt == "json":
        records = json.loads(response.content)
        header = list(records[0]) if records else []
        lines = [list(record.values()) for record in records]
    else:
        sheet = openpyxl.load_workbook(io.BytesIO(response.content), read_only=True).active
        header, *lines = [list(row) for row in sheet.iter_rows(values_only=True)]
    header = [_cell(name) for name in header]
    return Table(header, [dict(zip(header, map(_cell, line), strict=True)) for line in lines])


def download(client, page_url: str, fmt: str, resource: str | None = None) -> Table:
    """Open the export page, pick a format (and resource), submit the form as it stands, parse the file."""
    page = client.get(page_url)
    assert page.status_code == 200
    form = form_of(page, form_id="gc-export-form")
    assert form.target(page_url) == page_url, "the export form must post to the filtered URL"
    form.choose("format", fmt)
    if resource:
        form.choose("resource", resource)
    return table_of(client.post(form.target(page_url), form.data), fmt)


def actions_offered(response) -> list[str]:
    """The values of the changelist's action menu; none when the user has no action."""
    try:
        form = form_of(response, having="action")
    except AssertionError:
        return []
    return [value for value, _ in form.choices.get("action", [])]


# Data ------------------------------------------------------------------------


@pytest.fixture
def graded(grading_study, make_patients, graders, who):
    """Three grades in the grading study (two patients) and one in another study of another region."""
    other = StudyFactory(graders_per_patient=1, repeat_share=0)
    other.grade_types.add(who)
    other.graders.add(*graders)
    first, second = make_patients(grading_study, 2)
    (outside,) = make_patients(other, 1)
    expected = {}  # grade id -> (patient code, grader, choice in every field, note)
    for patient, grader, choice, note in [
        (first, graders[0], "0", ""),
        (first, graders[1], "1", "small eyelid"),
        (second, graders[0], "1", ""),
    ]:
        for grade in submit(grading_study, patient, grader, choice, note=note):  # a grade per eye
            expected[str(grade.pk)] = (patient.code, grader.username, choice, note)
    outside_grades = [str(grade.pk) for grade in submit(other, outside, graders[2], "U")]
    return SimpleNamespace(study=grading_study, other=other, expected=expected, outside=outside_grades)


def grades_list_url(study) -> str:
    return reverse("admin:grading_grade_changelist") + f"?{GRADE_FILTER}={study.pk}"


@pytest.fixture
def listed(db):
    """Two studies, two regions: two patients and a right-eye photo in the first, one of each in the other."""
    study, other = StudyFactory(), StudyFactory()
    first = PatientFactory(study=study, code="A-001", age_years=7, sex=Patient.Sex.MALE)
    PatientFactory(study=study, code="A-002", age_years=None, sex="")
    outside = PatientFactory(study=other, code="B-001")
    (image,) = images_upload(
        patient=first, files=[("right.jpg", io.BytesIO(images.jpeg(seed=1)))], eye="R", uploaded_by=None
    )
    images_upload(
        patient=outside, files=[("left.jpg", io.BytesIO(images.jpeg(seed=2)))], eye="L", uploaded_by=None
    )
    return SimpleNamespace(study=study, other=other, image=image)


# 1. Exports hold the rows of the filtered list --------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_wide_grade_export_holds_the_filtered_grades_one_column_per_field(admin_client, graded, fmt):
    url = export_link(admin_client, grades_list_url(graded.study))
    assert url == reverse("admin:grading_grade_export") + f"?{GRADE_FILTER}={graded.study.pk}"

    table = download(admin_client, url, fmt, resource=WIDE)

    assert table.header[-5:] == WHO_FIELDS
    assert {"grade_id", "study", "patient_code", "grader", "note"} <= set(table.header)
    assert len(table.rows) == len(graded.expected)
    got = {
        row["grade_id"]: (row["patient_code"], row["grader"], [row[f] for f in WHO_FIELDS], row["note"])
        for row in table.rows
    }
    assert got == {
        pk: (code, grader, [choice] * 5, note) for pk, (code, grader, choice, note) in graded.expected.items()
    }
    assert {row["study"] for row in table.rows} == {graded.study.name}
    assert not set(graded.outside) & set(got)


@pytest.mark.parametrize("fmt", FORMATS)
def test_long_grade_export_holds_one_row_per_answer_of_the_filtered_grades(admin_client, graded, fmt):
    url = export_link(admin_client, grades_list_url(graded.study))

    table = download(admin_client, url, fmt, resource=LONG)

    assert {"grade_id", "patient_code", "grader", "field", "value", "label"} <= set(table.header)
    got = sorted((row["grade_id"], row["field"], row["value"], row["patient_code"]) for row in table.rows)
    assert got == sorted(
        (pk, name, choice, code)
        for pk, (code, _, choice, _) in graded.expected.items()
        for name in WHO_FIELDS
    )


@pytest.mark.filterwarnings(
    "ignore:The 'get_valid_export_item_pks:DeprecationWarning"
)  # inside import-export
def test_export_action_on_selected_grades_keeps_the_filter_and_the_selection(admin_client, graded):
    changelist = grades_list_url(graded.study)
    chosen = sorted(graded.expected)[1]
    page = admin_client.post(changelist, {"action": "export_admin_action", "_selected_action": [chosen]})
    assert page.status_code == 200
    form = form_of(page, form_id="gc-export-form")
    assert (
        form.target(changelist)
        == reverse("admin:grading_grade_export") + f"?{GRADE_FILTER}={graded.study.pk}"
    )
    assert form.data["export_items"] == [chosen]
    form.choose("format", "csv")

    table = table_of(admin_client.post(form.target(changelist), form.data), "csv")

    assert [row["grade_id"] for row in table.rows] == [chosen]


@pytest.mark.parametrize("fmt", FORMATS)
def test_patient_export_holds_the_patients_of_the_filtered_study(admin_client, listed, fmt):
    changelist = reverse("admin:studies_patient_changelist") + f"?study__id__exact={listed.study.pk}"
    url = export_link(admin_client, changelist)
    assert url.endswith(f"?study__id__exact={listed.study.pk}")

    table = download(admin_client, url, fmt)

    assert table.header == ["id", "study", "code", "age_years", "sex", "created_at"]
    got = sorted((row["code"], row["study"], row["age_years"], row["sex"]) for row in table.rows)
    assert [(code, study) for code, study, *_ in got] == [
        ("A-001", str(listed.study.pk)),
        ("A-002", str(listed.study.pk)),
    ]
    assert got[0][2:] == ("7", "M")


@pytest.mark.parametrize("fmt", FORMATS)
def test_image_export_holds_the_photos_of_the_filtered_study(admin_client, listed, fmt):
    changelist = reverse("admin:studies_image_changelist") + f"?study__id__exact={listed.study.pk}"
    url = export_link(admin_client, changelist)

    table = download(admin_client, url, fmt)

    assert [row["id"] for row in table.rows] == [str(listed.image.pk)]
    (row,) = table.rows
    assert (row["study"], row["patient_code"], row["eye"], row["original_name"]) == (
        listed.study.name,
        "A-001",
        "R",
        "right.jpg",
    )
    assert (row["sha256"], row["storage_key"]) == (listed.image.sha256, listed.image.file.name)
    assert (row["width"], row["height"]) == (str(listed.image.width), str(listed.image.height))


@pytest.mark.parametrize("fmt", FORMATS)
def test_study_export_holds_the_studies_of_the_filtered_region(admin_client, listed, fmt):
    changelist = reverse("admin:studies_study_changelist") + f"?region__id__exact={listed.study.region_id}"
    url = export_link(admin_client, changelist)

    table = download(admin_client, url, fmt)

    assert [(row["name"], row["region"], row["patients"], row["images"]) for row in table.rows] == [
        (listed.study.name, listed.study.region.name, "2", "1")
    ]


@pytest.mark.parametrize(
    "fmt",
    [
        "csv",
        "json",
        "xlsx",
    ],
)
def test_a_missing_age_exports_as_an_empty_cell(admin_client, listed, fmt):
    url = reverse("admin:studies_patient_export") + f"?study__id__exact={listed.study.pk}"

    table = download(admin_client, url, fmt)

    assert {row["code"]: row["age_years"] for row in table.rows} == {"A-001": "7", "A-002": ""}


# 2. Formulas are escaped ------------------------------------------------------


def test_cells_starting_with_a_formula_are_escaped_in_csv(
    admin_client, grading_study, make_patients, graders
):
    (patient,) = make_patients(grading_study, 1)
    patient.code = '=HYPERLINK("http://evil.example/","open")'
    patient.save()
    submit(grading_study, patient, graders[0], "1", note="=1+2")
    grades_url = reverse("admin:grading_grade_export") + f"?{GRADE_FILTER}={grading_study.pk}"
    patients_url = reverse("admin:studies_patient_export") + f"?study__id__exact={grading_study.pk}"

    wide = download(admin_client, grades_url, "csv", resource=WIDE)
    long = download(admin_client, grades_url, "csv", resource=LONG)
    patients = download(admin_client, patients_url, "csv")

    # Our grade tables keep the text behind a leading apostrophe ...
    assert [(row["patient_code"], row["note"]) for row in wide.rows] == [("'" + patient.code, "'=1+2")] * 2
    assert {row["patient_code"] for row in long.rows} == {"'" + patient.code}
    # ... the patient list gets django-import-export's escaping, which drops the leading '=' (today).
    (code,) = [row["code"] for row in patients.rows]
    assert code in ('HYPERLINK("http://evil.example/","open")', "'" + patient.code)
    for table in (wide, long, patients):
        assert not any(cell.startswith("=") for row in table.rows for cell in row.values())


def test_other_formula_starts_are_escaped_in_the_patient_csv(admin_client, study):
    for code in ("+1+1", "-1+1", "@SUM(1+1)"):
        PatientFactory(study=study, code=code)
    url = reverse("admin:studies_patient_export") + f"?study__id__exact={study.pk}"

    table = download(admin_client, url, "csv")

    assert len(table.rows) == 3
    assert not [row["code"] for row in table.rows if row["code"].startswith(("=", "+", "-", "@"))]


# 3. Who may export --------------------------------------------------------------


def test_graders_cannot_export_grades(client_for, graded, graders):
    client = client_for(graders[0])
    export_url = reverse("admin:grading_grade_export")

    assert client.get(export_url).status_code == 403
    assert client.post(export_url, {"format": "0", "resource": "0"}).status_code == 403

    changelist = client.get(reverse("admin:grading_grade_changelist"))
    assert changelist.status_code == 200
    assert "export_link" not in changelist.content.decode()
    assert "export_admin_action" not in actions_offered(changelist)
    own = sorted(pk for pk, (_, grader, _, _) in graded.expected.items() if grader == graders[0].username)
    response = client.post(
        reverse("admin:grading_grade_changelist"), {"action": "export_admin_action", "_selected_action": own}
    )
    assert "Content-Disposition" not in response


def test_image_collectors_cannot_export_patients(client_for, collector, listed):
    client = client_for(collector)

    assert client.get(reverse("admin:studies_patient_export")).status_code == 403
    changelist = client.get(reverse("admin:studies_patient_changelist"))
    assert changelist.status_code == 200
    assert "export_link" not in changelist.content.decode()
    assert "export_admin_action" not in actions_offered(changelist)
    assert client.get(reverse("admin:studies_image_export")).status_code == 403


def test_data_team_exports_every_grade(client_for, data_member, graded):
    client = client_for(data_member)
    changelist = reverse("admin:grading_grade_changelist")
    url = export_link(client, changelist)
    assert "export_admin_action" in actions_offered(client.get(changelist))

    table = download(client, url, "csv", resource=WIDE)

    assert sorted(row["grade_id"] for row in table.rows) == sorted([*graded.expected, *graded.outside])


# 4. Patients imported from a file ------------------------------------------------


def csv_file(text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile("patients.csv", text.encode(), content_type="text/csv")


def preview(client, study, text: str):
    """Choose the study, the file and CSV on the import page, and submit it."""
    url = reverse("admin:studies_patient_import")
    page = client.get(url)
    assert page.status_code == 200
    form = form_of(page, having="import_file")
    form.choose("format", "csv")
    form.choose("study", study.name)
    return client.post(form.target(url), {**form.data, "import_file": csv_file(text)})


def confirm(client, preview_page):
    form = form_of(preview_page, having="import_file_name")
    url = reverse("admin:studies_patient_import")
    assert form.target(url) == reverse("admin:studies_patient_process_import")
    return client.post(form.target(url), form.data, follow=True)


def patients_of(study) -> list[tuple]:
    return list(Patient.objects.filter(study=study).order_by("code").values_list("code", "age_years", "sex"))


def import_errors(page) -> str:
    """The text of the page below the import form: the preview or the errors."""
    html = page.content.decode()
    below_the_form = html[html.find("</form>", html.find("<main")) :]
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", below_the_form)))


def test_patients_are_imported_into_the_chosen_study_after_a_preview(client_for, collector):
    other, study = StudyFactory(name="Amhara 2024"), StudyFactory(name="Oromia 2025")
    client = client_for(collector)

    page = preview(client, study, "code,age_years,sex\nOR-001,5,f\nOR-002,,M\n")

    assert page.status_code == 200
    text = import_errors(page)
    assert "Errors" not in text and "OR-001" in text and "OR-002" in text
    assert Patient.objects.count() == 0  # a preview saves nothing
    assert form_of(page, having="import_file_name").data["study"] == [str(study.pk)]

    done = confirm(client, page)

    assert done.redirect_chain[-1][0] == reverse("admin:studies_patient_changelist")
    assert "2 new" in " ".join(str(m) for m in done.context["messages"])
    assert patients_of(study) == [("OR-001", 5, "F"), ("OR-002", None, "M")]
    assert patients_of(other) == []


def test_reimporting_the_same_codes_updates_or_skips_instead_of_duplicating(client_for, collector, study):
    client = client_for(collector)
    confirm(client, preview(client, study, "code,age_years,sex\nOR-001,5,F\nOR-002,,M\n"))

    page = preview(client, study, "code,age_years,sex\nOR-001,5,F\nOR-002,7,M\nOR-003,1,U\n")
    text = import_errors(page)
    assert re.search(
        rf"Skipped {study.pk} OR-001 5 F Update {study.pk} OR-002 7 M New {study.pk} OR-003 1 U", text
    )
    confirm(client, page)

    assert patients_of(study) == [("OR-001", 5, "F"), ("OR-002", 7, "M"), ("OR-003", 1, "U")]
    assert Patient.objects.count() == 3


@pytest.mark.parametrize(
    "row, message",
    [
        ("OR-002,5,X", "is not a valid choice"),
        ("OR-002,200,F", "less than or equal to 130"),
        ("OR-002,abc,F", "is not a whole number of years"),
    ],
)
def test_a_bad_sex_or_age_is_shown_in_the_preview_and_nothing_is_saved(
    client_for, collector, study, row, message
):
    client = client_for(collector)

    page = preview(client, study, f"code,age_years,sex\nOR-001,5,F\n{row}\n")

    assert page.status_code == 200
    text = import_errors(page)
    assert message in text
    assert "ConversionSyntax" not in text
    assert "OR-002" in text
    assert "not present in the file headers" not in text
    with pytest.raises(AssertionError):
        form_of(page, having="import_file_name")  # no Confirm import
    assert Patient.objects.count() == 0


def test_a_file_without_a_code_column_is_refused_with_a_clear_message(client_for, collector, study):
    client = client_for(collector)

    page = preview(client, study, "patient,age_years,sex\nOR-001,5,F\n")

    assert page.status_code == 200
    assert "The file needs a 'code' column" in import_errors(page)
    with pytest.raises(AssertionError):
        form_of(page, having="import_file_name")
    assert Patient.objects.count() == 0


def test_import_errors_are_shown_without_a_python_traceback(client_for, collector, study):
    page = preview(client_for(collector), study, "patient,age_years,sex\nOR-001,5,F\n")

    assert "The file needs a 'code' column" in import_errors(page)
    assert "Traceback (most recent call last)" not in import_errors(page)


def test_image_collectors_may_import_patients_and_the_data_team_may_not(
    client_for, collector, data_member, study
):
    collector_client, data_client = client_for(collector), client_for(data_member)
    changelist = reverse("admin:studies_patient_changelist")
    import_url = reverse("admin:studies_patient_import")

    assert collector_client.get(import_url).status_code == 200
    assert "import_link" in collector_client.get(changelist).content.decode()

    assert data_client.get(import_url).status_code == 403
    sent = {"study": study.pk, "format": "0", "import_file": csv_file("code\nOR-001\n")}
    assert data_client.post(import_url, sent).status_code == 403
    confirm_data = {"import_file_name": "x", "original_file_name": "x.csv", "format": "0", "study": study.pk}
    assert data_client.post(reverse("admin:studies_patient_process_import"), confirm_data).status_code == 403
    assert "import_link" not in data_client.get(changelist).content.decode()
    assert Patient.objects.count() == 0


# 5. API tokens -------------------------------------------------------------------


def issue(client, *users):
    return client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "issue_api_token", "_selected_action": [u.pk for u in users]},
        follow=True,
    )


def shown_tokens(page) -> list[str]:
    return re.findall(r'<code class="gc-token[^"]*">([^<]+)</code>', page.content.decode())


def test_a_token_issued_to_a_data_team_member_is_shown_once_and_works(admin_client, client, data_member):
    page = issue(admin_client, data_member)

    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    (token,) = shown_tokens(page)
    (issued,) = AuthToken.objects.all()
    assert issued.user == data_member and token.startswith(issued.token_key)

    api = client.get("/api/studies/", HTTP_AUTHORIZATION=f"Token {token}")
    assert api.status_code == 200
    assert client.get("/api/studies/", HTTP_AUTHORIZATION=f"Token {token[:-1]}x").status_code == 401

    tokens_list = admin_client.get(reverse("admin:knox_authtoken_changelist")).content.decode()
    detail = admin_client.get(reverse("admin:knox_authtoken_change", args=[issued.pk])).content.decode()
    users_list = admin_client.get(reverse("admin:auth_user_changelist")).content.decode()
    assert issued.token_key in tokens_list
    for html in (tokens_list, detail, users_list):
        assert token not in html


def test_tokens_cannot_be_added_from_the_token_list(admin_client):
    assert admin_client.get(reverse("admin:knox_authtoken_add")).status_code == 403
    tokens_list = admin_client.get(reverse("admin:knox_authtoken_changelist")).content.decode()
    assert reverse("admin:knox_authtoken_add") not in tokens_list


def test_no_token_for_a_user_outside_the_data_team(admin_client, grader, data_member):
    page = issue(admin_client, grader)

    assert page.redirect_chain == [(reverse("admin:auth_user_changelist"), 302)]
    assert shown_tokens(page) == []
    errors = [str(m) for m in page.context["messages"] if m.level_tag == "error"]
    assert errors == ["grader is not in the Data team; only its members may hold API tokens."]
    assert AuthToken.objects.count() == 0

    both = issue(admin_client, grader, data_member)  # the member gets one, the grader still none

    assert len(shown_tokens(both)) == 1
    assert [t.user for t in AuthToken.objects.all()] == [data_member]
    assert any("grader is not in the Data team" in str(m) for m in both.context["messages"])


def test_only_superusers_issue_tokens_or_touch_superusers(client_for, study_admin, admin_user, data_member):
    client = client_for(study_admin)
    changelist = client.get(reverse("admin:auth_user_changelist"))
    assert changelist.status_code == 200
    assert "issue_api_token" not in changelist.content.decode()
    response = client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "issue_api_token", "_selected_action": [data_member.pk]},
    )
    assert not AuthToken.objects.exists()
    assert response.status_code in (200, 302)
    superuser_page = client.get(reverse("admin:auth_user_change", args=[admin_user.pk])).content.decode()
    assert 'name="username"' not in superuser_page  # shown read-only
    refused = client.post(reverse("admin:auth_user_change", args=[admin_user.pk]), {"username": "taken"})
    assert refused.status_code == 403
    own_page = client.get(reverse("admin:auth_user_change", args=[data_member.pk])).content.decode()
    assert 'name="is_superuser"' not in own_page and 'name="user_permissions"' not in own_page
