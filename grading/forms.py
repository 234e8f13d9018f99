"""Admin forms for grading: a field's options typed as lines, a study's grade types."""

from django import forms

from studies.forms import StudyForm
from studies.models import Study

from .certification import certification_results
from .models import Grade, GradeField, GradeType

OPTION_HELP = (
    "One option per line, in order: <code>VALUE = Label</code>; add <code>[ungradable]</code> "
    "to an option that means the photo cannot be graded. Example:<br>"
    "<code>0 = Absent</code><br><code>1 = Present</code><br><code>U = Ungradable [ungradable]</code>"
)
UNGRADABLE_MARK = "[ungradable]"


def options_parse(text: str) -> list[dict]:
    """Parse the options box into [{"value", "label", "ungradable"}], or raise ValidationError."""
    options = []
    values = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        ungradable = line.lower().endswith(UNGRADABLE_MARK)
        if ungradable:
            line = line[: -len(UNGRADABLE_MARK)].strip()
        value, _, label = (part.strip() for part in line.partition("="))
        if not value:
            raise forms.ValidationError(f"Line {number}: write VALUE = Label.")
        if len(value) > 50:
            raise forms.ValidationError(f"Line {number}: the value may have at most 50 characters.")
        if value in values:
            raise forms.ValidationError(f"Line {number}: the value {value!r} appears twice.")
        values.add(value)
        options.append({"value": value, "label": label or value, "ungradable": ungradable})
    if not options:
        raise forms.ValidationError("Give at least one option.")
    return options


def options_format(grade_field: GradeField) -> str:
    return "\n".join(
        f"{o.value} = {o.label}" + (f" {UNGRADABLE_MARK}" if o.ungradable else "")
        for o in grade_field.options.all()
    )


class GradeFieldForm(forms.ModelForm):
    options_text = forms.CharField(
        label="Options", widget=forms.Textarea(attrs={"rows": 4, "cols": 34}), help_text=OPTION_HELP
    )

    class Meta:
        model = GradeField
        fields = ["name", "help_text", "order", "required"]
        widgets = {"help_text": forms.Textarea(attrs={"rows": 3, "cols": 40})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["options_text"].initial = options_format(self.instance)

    def clean_options_text(self):
        options = options_parse(self.cleaned_data["options_text"])
        if self.instance.pk:
            kept = {spec["value"] for spec in options}
            used = [
                o.value for o in self.instance.options.all() if o.value not in kept and o.entries.exists()
            ]
            if used:
                raise forms.ValidationError(
                    f"The option(s) {', '.join(used)} are used in grades and cannot be removed."
                )
        return options


class StudyGradingForm(StudyForm):
    """The study form with the grade types the study is graded with."""

    grade_types = forms.ModelMultipleChoiceField(
        queryset=GradeType.objects.filter(is_active=True),
        required=False,
        widget=forms.CheckboxSelectMultiple(),
        help_text="Graders fill one form per grade type for every patient.",
    )

    class Meta(StudyForm.Meta):
        fields = [
            "name", "region", "description", "is_active", "graders",
            "masked_codes", "randomized_order", "graders_per_patient", "repeat_share",
            "repeat_gap_min", "is_certification", "pass_kappa", "certification_required",
        ]  # fmt: skip
        widgets = {
            **StudyForm.Meta.widgets,
            "pass_kappa": forms.NumberInput(attrs={"class": "form-control", "style": "max-width: 10rem"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["grade_types"].initial = list(self.instance.grade_types.all())
        if "pass_kappa" in self.fields:  # left blank: the usual bar
            self.fields["pass_kappa"].required = False

    def clean_pass_kappa(self):
        chosen = self.cleaned_data.get("pass_kappa")
        return Study._meta.get_field("pass_kappa").default if chosen is None else chosen

    def clean(self):
        cleaned = super().clean()
        required = cleaned.get("certification_required")
        if required is None:
            return cleaned
        if self.instance.pk and required.pk == self.instance.pk:
            self.add_error(
                "certification_required", "A study cannot require itself as its certification set."
            )
        elif "graders" in cleaned:
            errors = _uncertified_graders(
                required=required, graders=self._graders_to_certify(cleaned["graders"], required)
            )
            if errors:
                self.add_error("graders", errors)
        return cleaned

    def _graders_to_certify(self, graders, required: Study) -> list:
        """Graders being assigned; every grader when the certification required is new or another."""
        graders = list(graders)
        if not self.instance.pk or self.instance.certification_required_id != required.pk:
            return graders
        assigned = set(self.instance.graders.values_list("pk", flat=True))
        return [grader for grader in graders if grader.pk not in assigned]

    def clean_grade_types(self):
        chosen = self.cleaned_data["grade_types"]
        if self.instance.pk:
            removed = set(self.instance.grade_types.all()) - set(chosen)
            graded = [
                t.name
                for t in removed
                if Grade.objects.filter(patient__study=self.instance, grade_type=t).exists()
            ]
            if graded:
                raise forms.ValidationError(
                    f"{', '.join(graded)} already has grades in this study and cannot be removed from it."
                )
        return chosen


def _uncertified_graders(*, required: Study, graders: list) -> list[str]:
    """A message for each grader who has not passed the certification set `required`, naming why."""
    results = certification_results(study=required, users=graders)
    return [
        f"{results[grader.pk].name} has not passed the certification set {required.name} "
        f"({results[grader.pk].summary})."
        for grader in graders
        if not results[grader.pk].passed
    ]


class GradeTypeImportForm(forms.Form):
    file = forms.FileField(label="JSON file", help_text="A file exported with the 'Export as JSON' action.")
