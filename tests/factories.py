import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from studies.models import Patient, Region, Study


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.org")
    is_staff = True
    password = factory.django.Password("pass-word-123")

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        if create and extracted:
            self.groups.set(Group.objects.filter(name__in=extracted))


class RegionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Region

    name = factory.Sequence(lambda n: f"Region {n}")
    country = "Ethiopia"


class StudyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Study

    name = factory.Sequence(lambda n: f"Study {n}")
    region = factory.SubFactory(RegionFactory)


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    study = factory.SubFactory(StudyFactory)
    code = factory.Sequence(lambda n: f"P{n:04d}")
    age_years = 6
    sex = Patient.Sex.FEMALE
