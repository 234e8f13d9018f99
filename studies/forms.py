"""Forms of the studies admin: the patient form takes a batch of photos."""

import tempfile
from pathlib import Path

from django import forms
from django.db.models import Q

from . import services
from .models import Eye, Patient, Study


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """Any number of files; the image pipeline, not this field, judges each one."""

    widget = MultipleFileInput

    def clean(self, data, initial=None):
        if not data:
            if self.required:
                raise forms.ValidationError(self.error_messages["required"], code="required")
            return []
        return list(data) if isinstance(data, (list, tuple)) else [data]


class PatientForm(forms.ModelForm):
    new_images = MultipleImageField(
        label="Add photos",
        required=False,
        widget=MultipleFileInput(attrs={"multiple": True, "accept": "image/*", "class": "gc-upload-input"}),
        help_text="Choose or drop any number of photos; all are checked before any is stored.",
    )
    new_images_eye = forms.ChoiceField(
        label="Eye of these photos", choices=Eye.choices, initial=Eye.RIGHT, required=False
    )

    class Meta:
        model = Patient
        fields = ["study", "code", "age_years", "sex"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepared_images = []
        self._workdir: tempfile.TemporaryDirectory | None = None

    def clean(self):
        cleaned = super().clean()
        files = cleaned.get("new_images") or []
        study = cleaned.get("study") or getattr(self.instance, "study", None)
        if files and study is not None and not self.errors:
            self._workdir = tempfile.TemporaryDirectory(prefix="gc-upload-")
            try:
                self.prepared_images = services.images_prepare(
                    study=study,
                    files=[(upload.name, upload) for upload in files],
                    workdir=Path(self._workdir.name),
                )
            except services.BatchRefused as refused:
                self.add_error(
                    "new_images",
                    [f"Nothing was stored; {len(refused.refusals)} file(s) refused:"] + refused.messages,
                )
        return cleaned

    def images_store(self, *, patient: Patient, uploaded_by) -> int:
        """Store the photos checked in clean(); return how many."""
        try:
            if not self.prepared_images:
                return 0
            images = services.images_store(
                patient=patient,
                prepared=self.prepared_images,
                eye=self.cleaned_data.get("new_images_eye") or Eye.UNKNOWN,
                uploaded_by=uploaded_by,
            )
            return len(images)
        finally:
            if self._workdir is not None:
                self._workdir.cleanup()


class ImportStartForm(forms.Form):
    """The JSON body that opens a field-day import."""

    source = forms.ChoiceField(choices=[("zip", "ZIP file"), ("folder", "Folder")])
    files = forms.JSONField(required=False)


class ImportPartForm(forms.Form):
    part_index = forms.IntegerField(min_value=0)
    data = forms.FileField(allow_empty_file=True)


class StudyForm(forms.ModelForm):
    """The study form: graders are ticked among the Graders group (and those already assigned)."""

    class Meta:
        model = Study
        fields = [
            "name", "region", "description", "is_active", "graders", "masked_codes", "randomized_order",
            "graders_per_patient", "repeat_share", "repeat_gap_min",
        ]  # fmt: skip
        widgets = {
            "name": forms.TextInput(attrs={"class": "vTextField form-control"}),
            # A list to tick: every name whole, and no "Hold down Control" as a multiple select needs.
            "graders": forms.CheckboxSelectMultiple(),
            **{
                name: forms.NumberInput(attrs={"class": "form-control", "style": "max-width: 10rem"})
                for name in ("graders_per_patient", "repeat_share", "repeat_gap_min")
            },
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        graders = self.fields.get("graders")
        if graders is not None:
            from accounts.roles import GRADERS

            users = graders.queryset.model.objects.filter(is_active=True)
            offered = Q(groups__name=GRADERS)
            if self.instance.pk:
                offered |= Q(pk__in=self.instance.graders.values("pk"))
            graders.queryset = users.filter(offered).distinct().order_by("username")
            graders.help_text = (
                "Members of the Graders group who may grade this study. "
                "To offer someone here, add them to the Graders group on their user page."
            )
