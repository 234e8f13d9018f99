"""django-import-export resources: what the admin's Export and Import buttons read and write."""

import tablib
from import_export import fields, resources, widgets

from grading.models import Consensus, Grade
from studies.models import Image, Patient, Study

from . import selectors
from .streams import formula_escaped


class EscapedResource(resources.ModelResource):
    """Exports with formulas quoted, and numbers and dates kept as such in XLSX."""

    def export_field(self, field, instance, **kwargs):
        return formula_escaped(super().export_field(field, instance, **kwargs))


class AgeWidget(widgets.IntegerWidget):
    def clean(self, value, row=None, **kwargs):
        try:
            return super().clean(value, row=row, **kwargs)
        except ArithmeticError:  # decimal's error for text such as "abc"
            raise ValueError(f"{value!r} is not a whole number of years.") from None


class StudyResource(EscapedResource):
    region = fields.Field(attribute="region__name", column_name="region")
    patients = fields.Field(attribute="patient_count", column_name="patients")
    images = fields.Field(attribute="image_count", column_name="images")

    class Meta:
        model = Study
        fields = [
            "id", "name", "region", "description", "is_active", "masked_codes", "randomized_order",
            "graders_per_patient", "repeat_share", "patients", "images", "created_at",
        ]  # fmt: skip
        export_order = fields


class PatientResource(EscapedResource):
    """Patients: exported with their study; imported into the study chosen on the import page."""

    study = fields.Field(attribute="study", column_name="study", widget=widgets.ForeignKeyWidget(Study, "pk"))
    age_years = fields.Field(attribute="age_years", column_name="age_years", widget=AgeWidget())

    class Meta:
        model = Patient
        fields = ["id", "study", "code", "age_years", "sex", "created_at"]
        import_id_fields = ["study", "code"]
        skip_unchanged = True
        report_skipped = True
        clean_model_instances = True

    def __init__(self, study: Study | None = None, **kwargs):
        super().__init__(**kwargs)
        self.study = study

    def get_import_fields(self):
        return [self.fields[name] for name in ("study", "code", "age_years", "sex")]

    def before_import(self, dataset, **kwargs):
        dataset.headers = [str(header or "").strip().lower() for header in dataset.headers or []]
        if "code" not in dataset.headers:
            raise ValueError("The file needs a 'code' column (and may have 'age_years' and 'sex').")
        if self.study is None:
            raise ValueError("Choose the study to import the patients into.")
        # Every row goes to the study chosen on the page, whatever the file says.
        if "study" in dataset.headers:
            del dataset["study"]
        dataset.append_col([self.study.pk] * dataset.height, header="study")

    def before_import_row(self, row, **kwargs):
        if row.get("sex"):
            row["sex"] = str(row["sex"]).strip().upper()[:1]
        if "code" in row and row["code"] is not None:
            row["code"] = str(row["code"]).strip()


class ImageResource(EscapedResource):
    study = fields.Field(attribute="study__name", column_name="study")
    patient_code = fields.Field(attribute="patient__code", column_name="patient_code")
    storage_key = fields.Field(attribute="file__name", column_name="storage_key")

    class Meta:
        model = Image
        fields = [
            "id", "study", "patient_code", "eye", "storage_key", "sha256", "width", "height", "bytes",
            "original_name", "uploaded_at",
        ]  # fmt: skip
        export_order = fields


class _TableResource(resources.ModelResource):
    """A resource whose export is a table built by a selector, with columns of its own."""

    class Meta:
        model = Grade
        fields = []

    def table(self, queryset) -> selectors.Table:
        raise NotImplementedError

    def export(self, queryset=None, **kwargs) -> tablib.Dataset:
        table = self.table(queryset if queryset is not None else Grade.objects.all())
        dataset = tablib.Dataset(headers=table.header)
        for row in table.rows:
            dataset.append([formula_escaped(cell) for cell in row])
        return dataset


class GradeWideResource(_TableResource):
    """Grades, one row per grade, one column per field."""

    class Meta:
        model = Grade
        fields = []
        name = "Grades, one row per grade (wide)"

    def table(self, queryset):
        return selectors.grades_table(grades=queryset)


class GradeLongResource(_TableResource):
    """Grades, one row per answer."""

    class Meta:
        model = Grade
        fields = []
        name = "Grades, one row per answer (long)"

    def table(self, queryset):
        return selectors.grade_entries_table(grades=queryset)


class ConsensusResource(EscapedResource):
    """Each patient's consensus per field (and eye), with how it was reached."""

    study = fields.Field(attribute="patient__study__name", column_name="study")
    patient_code = fields.Field(attribute="patient__code", column_name="patient_code")
    grade_type = fields.Field(attribute="grade_type__name", column_name="grade_type")
    field = fields.Field(attribute="field__name", column_name="field")
    value = fields.Field(attribute="option__value", column_name="value")
    label = fields.Field(attribute="option__label", column_name="label")
    ungradable = fields.Field(attribute="option__ungradable", column_name="ungradable")

    class Meta:
        model = Consensus
        name = "Consensus, one row per patient, field and eye"
        fields = [
            "study", "patient_code", "grade_type", "eye", "field", "value", "label", "ungradable", "method",
            "graders", "votes", "updated_at",
        ]  # fmt: skip
        export_order = fields

    def filter_export(self, queryset, **kwargs):
        return queryset.select_related("patient__study", "grade_type", "field", "option")
