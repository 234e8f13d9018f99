from rest_framework import serializers

from grading.models import Grade, GradeField, GradeOption, GradeType
from studies.models import Image, Study


class GradeOptionSerializer(serializers.ModelSerializer):
    class Meta:
        model = GradeOption
        fields = ["id", "value", "label", "order", "ungradable"]


class GradeFieldSerializer(serializers.ModelSerializer):
    options = GradeOptionSerializer(many=True)

    class Meta:
        model = GradeField
        fields = ["id", "name", "help_text", "order", "required", "options"]


class GradeTypeSerializer(serializers.ModelSerializer):
    fields = GradeFieldSerializer(many=True)

    class Meta:
        model = GradeType
        fields = ["id", "name", "description", "unit", "is_active", "fields"]


class StudySerializer(serializers.ModelSerializer):
    region = serializers.StringRelatedField()
    patient_count = serializers.IntegerField()
    image_count = serializers.IntegerField()
    grade_types = GradeTypeSerializer(many=True)

    class Meta:
        model = Study
        fields = [
            "id", "name", "region", "description", "is_active", "graders_per_patient", "repeat_share",
            "patient_count", "image_count", "grade_types",
        ]  # fmt: skip


class GradeSerializer(serializers.ModelSerializer):
    grader = serializers.CharField(source="grader.username")
    grade_type = serializers.CharField(source="grade_type.name")
    answers = serializers.SerializerMethodField()

    class Meta:
        model = Grade
        fields = ["id", "grader", "grade_type", "eye", "kind", "created_at", "answers"]

    def get_answers(self, grade: Grade) -> dict[str, str | None]:
        return {
            entry.field.name: entry.option.value if entry.option else None for entry in grade.entries.all()
        }


class ImageSerializer(serializers.ModelSerializer):
    study = serializers.IntegerField(source="study_id")
    patient_code = serializers.CharField(source="patient.code")
    storage_key = serializers.CharField(source="file.name")
    url = serializers.SerializerMethodField()
    grades = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = [
            "id", "study", "patient_code", "eye", "sha256", "width", "height", "bytes", "uploaded_at",
            "storage_key", "url", "grades",
        ]  # fmt: skip

    def get_url(self, image: Image) -> str:
        return self.context["url_of"](image.pk, image.file.name)

    def get_grades(self, image: Image) -> list[dict]:
        """The patient's grades, and of a per-eye grade type only those of this photo's eye."""
        grades = [g for g in image.patient.current_grades if g.eye in ("", image.eye)]
        return GradeSerializer(grades, many=True).data
