"""The data team's API: token login, studies, images with grades, grade exports, training sets."""

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import Http404
from django.urls import reverse
from drf_spectacular.authentication import BasicScheme
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from knox import views as knox_views
from rest_framework import exceptions, serializers
from rest_framework.authentication import BasicAuthentication
from rest_framework.generics import ListAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from grading.reports import AGREEMENT_COLUMNS, Ungradable, agreement_report, agreement_rows
from studies.models import Image
from studies.storage import storage_is_local
from studies.views import stored_file_response

from . import params, selectors
from .permissions import IsDataTeam
from .selectors import Table
from .serializers import ImageSerializer, StudySerializer
from .streams import table_response


def url_maker(request):
    """A function giving each photo a URL: pre-signed on S3, the token-checked file endpoint locally."""
    if storage_is_local():
        base = request.build_absolute_uri(reverse("api-image-file", args=[0])).rsplit("/0/", 1)[0]
        return lambda pk, key: f"{base}/{pk}/file/"
    return lambda pk, key: default_storage.url(key)


TOKEN_RESPONSE = inline_serializer(
    "Token", {"token": serializers.CharField(), "expiry": serializers.DateTimeField()}
)


class LoginRateThrottle(SimpleRateThrottle):
    """Login attempts per client address, failed ones included."""

    scope = "api_login"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LockedOut(exceptions.Throttled):
    default_detail = (
        "Too many failed sign-ins for this account or from this address: signing in is paused, "
        "even with the right password."
    )


class LockoutBasicAuthentication(BasicAuthentication):
    """HTTP Basic through django-axes (the first authentication backend): a failure counts towards
    the sign-in lockout the admin shares, and a locked-out user or address is refused with 429."""

    def authenticate_credentials(self, userid, password, request=None):
        try:
            return super().authenticate_credentials(userid, password, request)
        except exceptions.AuthenticationFailed:
            if getattr(request, "axes_locked_out", False):
                raise LockedOut(wait=settings.AXES_COOLOFF_TIME.total_seconds()) from None
            raise


class LockoutBasicScheme(BasicScheme):
    """The same HTTP Basic in the OpenAPI schema."""

    target_class = LockoutBasicAuthentication


class LoginView(knox_views.LoginView):
    """POST with HTTP Basic credentials of a Data team member: a token and its expiry."""

    authentication_classes = [LockoutBasicAuthentication]
    permission_classes = [IsDataTeam]
    throttle_classes = []  # counted in initial(), before the credentials are checked

    def initial(self, request, *args, **kwargs):
        throttle = LoginRateThrottle()
        if not throttle.allow_request(request, self):
            self.throttled(request, throttle.wait())
        super().initial(request, *args, **kwargs)

    def get_token_ttl(self):
        return settings.REST_KNOX["TOKEN_TTL"]  # read now, not at import

    def get_post_response_data(self, request, token, instance):
        return {"token": token, "expiry": self.format_expiry_datetime(instance.expiry)}

    @extend_schema(request=None, responses={200: TOKEN_RESPONSE})
    def post(self, request, format=None):
        return super().post(request, format=format)


class LogoutView(knox_views.LogoutView):
    permission_classes = [IsDataTeam]

    @extend_schema(request=None, responses={204: None})
    def post(self, request, format=None):
        return super().post(request, format=format)


class LogoutAllView(knox_views.LogoutAllView):
    permission_classes = [IsDataTeam]

    @extend_schema(request=None, responses={204: None})
    def post(self, request, format=None):
        return super().post(request, format=format)


class StudyList(ListAPIView):
    """Every study with its counts and its grade types (fields and options)."""

    serializer_class = StudySerializer
    pagination_class = None

    def get_queryset(self):
        return selectors.studies_for_api()


class ImageCursor(CursorPagination):
    ordering = "pk"
    page_size_query_param = "limit"

    invalid_cursor_message = "cursor is not one this API gave; start again without it."

    def decode_cursor(self, request):
        from rest_framework.exceptions import NotFound, ValidationError

        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError({"cursor": [self.invalid_cursor_message]}) from None

    def get_page_size(self, request):
        limit = params.optional_int(request.query_params, "limit")
        if limit is None:
            return settings.API_PAGE_SIZE
        return min(limit, settings.API_MAX_PAGE_SIZE)


IMAGE_PARAMETERS = [
    OpenApiParameter("study", OpenApiTypes.INT, description="Only this study's images."),
    OpenApiParameter(
        "graded",
        OpenApiTypes.BOOL,
        description="Only images of patients with (true) or without (false) a current regular grade, "
        "of grade_type when given.",
    ),
    OpenApiParameter("grade_type", OpenApiTypes.INT, description="The grade type that 'graded' refers to."),
    OpenApiParameter("eye", OpenApiTypes.STR, enum=["R", "L", "U"]),
    OpenApiParameter("updated_since", OpenApiTypes.DATETIME, description="Uploaded or graded since then."),
    OpenApiParameter("limit", OpenApiTypes.INT, description="Images per page (at most 1000)."),
]  # fmt: skip


@extend_schema(parameters=IMAGE_PARAMETERS)
class ImageList(ListAPIView):
    """Images with their storage key, a URL to fetch each, and their patient's current grades."""

    serializer_class = ImageSerializer
    pagination_class = ImageCursor

    def get_queryset(self):
        query = self.request.query_params
        study = params.study(query, required=False)
        return selectors.images_for_api(
            study=study,
            graded=params.boolean(query, "graded"),
            grade_type=params.grade_type(query, study=study),
            eye=params.eye(query),
            updated_since=params.moment(query, "updated_since"),
        )

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "url_of": url_maker(self.request)}


class ImageFile(APIView):
    """The stored photo itself, for token holders (local storage; on S3 the list gives pre-signed URLs)."""

    @extend_schema(responses={(200, "image/*"): OpenApiTypes.BINARY})
    def get(self, request, pk: int):
        image = Image.objects.filter(pk=pk).only("file").first()
        if image is None:
            raise Http404("No such image.")
        return stored_file_response(image.file.name)


TABLE_RESPONSES = {(200, "text/csv"): OpenApiTypes.STR, (200, "application/json"): OpenApiTypes.OBJECT}

GRADE_PARAMETERS = [
    OpenApiParameter("study", OpenApiTypes.INT, required=True),
    OpenApiParameter("grade_type", OpenApiTypes.INT, description="Only this grade type (default: all)."),
    OpenApiParameter("current", OpenApiTypes.BOOL, description="Only current grades (default false: "
                     "history included, with is_current and superseded_by)."),
    OpenApiParameter("format", OpenApiTypes.STR, enum=["csv", "json"], description="Default json."),
]  # fmt: skip


class GradeExport(APIView):
    """Every grade of a study, one row per grade, one column per field (streamed)."""

    @extend_schema(parameters=GRADE_PARAMETERS, responses=TABLE_RESPONSES)
    def get(self, request):
        query = request.query_params
        study = params.study(query, required=True)
        grade_type = params.grade_type(query, study=study)
        file_format = params.export_format(query)
        current = params.boolean(query, "current") or False
        table = selectors.grades_for_export(study=study, grade_type=grade_type, current_only=current)
        return table_response(table, file_format=file_format, filename=f"grades-study-{study.pk}")


TRAINING_PARAMETERS = [
    OpenApiParameter("study", OpenApiTypes.INT, required=True),
    OpenApiParameter("grade_type", OpenApiTypes.INT, required=True),
    OpenApiParameter("field", OpenApiTypes.STR, description="The field to label by (name or id); "
                     "needed when the grade type has more than one."),
    OpenApiParameter("split", OpenApiTypes.STR, description="train,val,test percentages; default 80,10,10."),
    OpenApiParameter("seed", OpenApiTypes.INT, description="Seed of the per-patient split; default 0."),
    OpenApiParameter("min_graders", OpenApiTypes.INT, description="Distinct graders needed for a label; "
                     "default: the study's graders wanted."),
    OpenApiParameter("format", OpenApiTypes.STR, enum=["csv", "json"], description="Default json."),
]  # fmt: skip


class TrainingSet(APIView):
    """A training-set manifest: one row per image, its consensus label and its patient-level split."""

    @extend_schema(parameters=TRAINING_PARAMETERS, responses=TABLE_RESPONSES)
    def get(self, request):
        query = request.query_params
        study = params.study(query, required=True)
        grade_type = params.grade_type(query, study=study, required=True)
        field = params.field(query, grade_type=grade_type)
        table = selectors.training_set(
            study=study,
            field=field,
            split=params.split(query),
            seed=params.seed(query),
            min_graders=params.min_graders(query, default=study.graders_per_patient),
            url_of=url_maker(request),
        )
        file_format = params.export_format(query)
        return table_response(table, file_format=file_format, filename=f"training-set-study-{study.pk}")


AGREEMENT_PARAMETERS = [
    OpenApiParameter("study", OpenApiTypes.INT, required=True),
    OpenApiParameter("ungradable", OpenApiTypes.STR, enum=list(Ungradable.CHOICES),
                     description="Leave ungradable answers out (default) or count them as a category."),
    OpenApiParameter("rounds", OpenApiTypes.INT, description="Bootstrap resamples for the 95 % intervals; "
                     "default 1000, 0 for none."),
    OpenApiParameter("seed", OpenApiTypes.INT, description="Seed of the bootstrap; default 0."),
    OpenApiParameter("format", OpenApiTypes.STR, enum=["csv", "json"], description="Default json."),
]  # fmt: skip


class Agreement(APIView):
    """A study's agreement report: per field, coefficients with 95 % intervals, graders, pairs, repeats."""

    @extend_schema(parameters=AGREEMENT_PARAMETERS, responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        query = request.query_params
        study = params.study(query, required=True)
        ungradable = params.choice(
            query, "ungradable", choices=Ungradable.CHOICES, default=Ungradable.EXCLUDED
        )
        report = agreement_report(
            study=study, ungradable=ungradable, rounds=params.rounds(query), seed=params.bootstrap_seed(query)
        )
        if params.export_format(query) == "csv":
            table = Table(header=AGREEMENT_COLUMNS, rows=agreement_rows(report))
            return table_response(table, file_format="csv", filename=f"agreement-study-{study.pk}")
        return Response(report.as_dict())
