"""The adjudicators' pages inside the admin: studies with disagreements, a study's queue, one patient.

HTTP only: what a page shows comes from grading.selectors, what a page saves
goes through grading.services. Every page needs grading.adjudicate_grade;
adjudicators see patient codes and graders' names (the masking is for graders).
"""

import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET, require_http_methods

from studies.models import Patient, Study

from . import selectors, services
from .models import Grade

QUEUE_PER_PAGE = 50
SAVED = {Grade.Kind.ADJUDICATION: "adjudication", Grade.Kind.REFERENCE: "reference grades"}


def _context(request: HttpRequest, **extra) -> dict:
    return {**admin.site.each_context(request), **extra}


def _adjudicator_only(request: HttpRequest) -> None:
    if not request.user.has_perm("grading.adjudicate_grade"):
        raise PermissionDenied("Only adjudicators may open the adjudication pages.")


def _study_or_404(request: HttpRequest, study_id: int) -> Study:
    _adjudicator_only(request)
    return get_object_or_404(Study.objects.select_related("region"), pk=study_id)


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    _adjudicator_only(request)
    studies = selectors.adjudication_studies()
    return TemplateResponse(
        request,
        "admin/grading/adjudication_index.html",
        _context(request, title="Adjudication", studies=studies),
    )


@require_GET
def study_queue(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _study_or_404(request, study_id)
    queue = selectors.adjudication_queue(
        study=study, page_number=request.GET.get("page"), per_page=QUEUE_PER_PAGE
    )
    title = f"{'Reference grades' if study.is_certification else 'Adjudication'}: {study.name}"
    return TemplateResponse(
        request,
        "admin/grading/adjudication_study.html",
        _context(request, title=title, study=study, queue=queue),
    )


@require_http_methods(["GET", "POST"])
def adjudicate(request: HttpRequest, study_id: int, patient_id: int) -> HttpResponse:
    study = _study_or_404(request, study_id)
    patient = get_object_or_404(Patient, pk=patient_id, study=study)
    if request.method == "GET":
        return _page(request, study, patient)
    answers = {key: value for key, value in request.POST.items() if key.startswith("answer-")}
    note = request.POST.get("note", "")
    kind = selectors.adjudication_kind(study=study)
    try:
        services.adjudication_submit(
            study=study,
            patient=patient,
            adjudicator=request.user,
            answers=answers,
            submission=request.POST.get("submission", ""),
            kind=kind,
            note=note,
        )
    except ValidationError as error:
        errors = error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}
        already = getattr(error, "code", None) == "already_saved"
        # After "already saved" a fresh key lets the adjudicator save the new answers on purpose.
        submission = None if already else request.POST.get("submission")
        return _page(
            request, study, patient, answers=answers, note=note, errors=errors, submission=submission,
            status=409 if already else 400,
        )  # fmt: skip
    messages.success(request, f"Saved the {SAVED[kind]} of {patient.code}.")
    following = selectors.adjudication_next(study=study)
    if following is None:
        return redirect("admin:grading_adjudication_study", study_id=study.pk)
    return redirect("admin:grading_adjudicate", study_id=study.pk, patient_id=following)


def _page(request, study, patient, *, answers=None, note=None, errors=None, submission=None, status=200):
    page = selectors.adjudication_page(
        study=study, patient=patient, viewer=request.user, answers=answers, note=note, errors=errors
    )
    try:
        submission = uuid.UUID(str(submission))
    except ValueError:
        submission = uuid.uuid4()  # the page's one-time key: the same page sent twice saves once
    context = _context(
        request,
        title=f"{'Reference grades' if study.is_certification else 'Adjudication'}: {patient.code}",
        page=page,
        study=study,
        patient=patient,
        submission=submission,
        non_field_errors=(errors or {}).get("__all__", []),
    )
    return TemplateResponse(request, "admin/grading/adjudication_patient.html", context, status=status)
