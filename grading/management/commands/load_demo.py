import io
import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.services import user_ensure
from studies.demo import eyelid_photo
from studies.models import Eye, Patient, Region, Study
from studies.services import images_upload

FIXTURE = Path(settings.BASE_DIR) / "fixtures" / "demo.json"
GRADE_TYPES = Path(settings.BASE_DIR) / "fixtures" / "grade_types.json"


class Command(BaseCommand):
    help = (
        "Load the demo: a region, a trachoma study, 12 patients with photos of both eyes, "
        "one user per role, and three graders' grades of 6 patients each. "
        "Running it again adds only what is missing."
    )

    def handle(self, *args, **options):
        demo = json.loads(FIXTURE.read_text())
        with transaction.atomic():
            users = {}
            for spec in demo["users"]:
                users[spec["username"]], created = user_ensure(
                    username=spec["username"],
                    password=demo["password"],
                    email=f"{spec['username']}@localhost",
                    first_name=spec["first_name"],
                    last_name=spec["last_name"],
                    groups=(spec["group"],),
                )
            region, _ = Region.objects.get_or_create(**demo["region"])
            study, _ = Study.objects.get_or_create(
                name=demo["study"]["name"],
                defaults={**demo["study"], "region": region, "created_by": users["studyadmin"]},
            )
            study.graders.add(*[users[s["username"]] for s in demo["users"] if s.get("grades_demo_study")])
            self._grade_types(study)
        added = 0
        for number, spec in enumerate(demo["patients"]):
            patient, _ = Patient.objects.get_or_create(study=study, code=spec["code"], defaults=spec)
            for eye_number, eye in enumerate([Eye.RIGHT, Eye.LEFT]):
                if patient.images.filter(eye=eye).exists():
                    continue
                photo = eyelid_photo(seed=number * 2 + eye_number)
                images_upload(
                    patient=patient,
                    files=[(f"{patient.code}_{eye}.jpg", io.BytesIO(photo))],
                    eye=eye,
                    uploaded_by=users["collector"],
                )
                added += 1
        from grading.demo import demo_grades

        graders = [users[s["username"]] for s in demo["users"] if s.get("grades_demo_study")]
        graded = demo_grades(study=study, graders=graders, per_grader=6)
        self.stdout.write(
            f"Demo study {study.name!r}: {study.patients.count()} patients, {added} photos and "
            f"{graded} grades by the demo graders added now. "
            f"Users {', '.join(users)} have the password {demo['password']!r}."
        )

    def _grade_types(self, study: Study) -> None:
        from grading.models import GradeType
        from grading.services import grade_types_import

        schemes = json.loads(GRADE_TYPES.read_text())
        missing = [s for s in schemes if not GradeType.objects.filter(name=s["name"]).exists()]
        if missing:
            grade_types_import(data=missing)
        study.grade_types.add(GradeType.objects.get(name=schemes[0]["name"]))
