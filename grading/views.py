"""The graders' pages inside the admin: dashboard, a study's queue, the grading page.

HTTP only: what a page shows comes from grading.selectors, what a page saves
goes through grading.services.
"""

import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from studies.models import Study

from . import selectors, services
from .models import Presentation

UPCOMING_SHOWN = 50
GRADED_PER_PAGE = 50


def _context(request: HttpRequest, **extra) -> dict:
    return {**admin.site.each_context(request), **extra}


def _study_or_403(request: HttpRequest, study_id: int) -> Study:
    study = selectors.assigned_study(study_id=study_id, grader=request.user)
    if study is None:
        raise PermissionDenied("You are not assigned to grade this study.")
    return study


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    studies = selectors.grader_progress(grader=request.user)
    return TemplateResponse(
        request, "grading/dashboard.html", _context(request, title="Grading", studies=studies)
    )


@require_GET
def study_queue(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _study_or_403(request, study_id)
    page = selectors.grader_study_page(
        study=study,
        grader=request.user,
        page_number=request.GET.get("page"),
        upcoming=UPCOMING_SHOWN,
        per_page=GRADED_PER_PAGE,
    )
    return TemplateResponse(
        request, "grading/study.html", _context(request, title=study.name, study=study, page=page)
    )


@require_GET
def next_patient(request: HttpRequest, study_id: int) -> HttpResponse:
    return _to_next_patient(request, _study_or_403(request, study_id))


def _to_next_patient(request: HttpRequest, study: Study) -> HttpResponse:
    """A redirect to the grader's next grading page, or to the study's page when none is left now."""
    presentation = services.presentation_next(study=study, grader=request.user)
    if presentation is not None:
        return redirect("admin:grading_page", study_id=study.pk, key=presentation.key)
    progress = selectors.Progress.of(selectors.queue_of(study=study, grader=request.user))
    if progress.preparing:
        messages.info(request, "Your queue of this study is being prepared. Try again in a minute.")
    elif progress.to_grade:
        messages.info(
            request,
            "The patients left for you are open on other graders' pages right now. "
            "Try again in a few minutes.",
        )
    else:
        messages.success(request, "You have graded every patient of this study. Thank you!")
    return redirect("admin:grading_study", study_id=study.pk)


def _presentation_or_404(request: HttpRequest, study_id: int, key: uuid.UUID) -> Presentation:
    presentation = selectors.presentation_for(key=key, study_id=study_id, grader=request.user)
    if presentation is None:
        _study_or_403(request, study_id)
        raise Http404("No such grading page.")
    return presentation


def _errors_of(error: ValidationError) -> dict[str, list[str]]:
    return error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}


@require_http_methods(["GET", "POST"])
def grade_patient(request: HttpRequest, study_id: int, key: uuid.UUID) -> HttpResponse:
    presentation = _presentation_or_404(request, study_id, key)
    if request.method == "GET":
        notice = None
        if presentation.ended_at is not None:
            notice = (
                "This page was already saved."
                if presentation.outcome == "saved"
                else ("This patient got its graders meanwhile; go on to your next patient.")
            )
        return _page(request, presentation, notices=[notice] if notice else [])
    answers = {key: value for key, value in request.POST.items() if key.startswith("answer-")}
    note = request.POST.get("note", "")
    try:
        services.grade_submit(presentation=presentation, grader=request.user, answers=answers, note=note)
    except ValidationError as error:
        code = getattr(error, "code", None)
        if code == "patient_full":
            messages.warning(request, error.messages[0])
            return _to_next_patient(request, presentation.queue.study)
        errors = _errors_of(error)
        status = 409 if code in ("already_saved", "already_graded") else 400
        return _page(request, presentation, answers=answers, note=note, errors=errors, status=status)
    messages.success(request, "Saved.")
    return _to_next_patient(request, presentation.queue.study)  # "Save and next", in one round trip


def _page(request, presentation, *, answers=None, note=None, errors=None, notices=(), status=200):
    page = selectors.grading_page(
        presentation=presentation, grader=request.user, answers=answers, note=note, errors=errors
    )
    context = _context(
        request,
        title=page.label,
        page=page,
        study=page.study,
        notices=notices,
        non_field_errors=(errors or {}).get("__all__", []),
        keep_seconds=max(30, services.reservation_time().total_seconds() / 3),
    )
    return TemplateResponse(request, "grading/patient.html", context, status=status)


@require_POST
def keep_patient(request: HttpRequest, study_id: int, key: uuid.UUID) -> HttpResponse:
    """The open grading page renews its hold on the patient's slot."""
    presentation = _presentation_or_404(request, study_id, key)
    return JsonResponse({"kept": services.presentation_keep(presentation=presentation)})


@require_POST
def regrade_patient(request: HttpRequest, study_id: int, number: int) -> HttpResponse:
    """Open a re-grade page for the patient the grader graded as their `number`-th."""
    study = _study_or_403(request, study_id)
    try:
        presentation = services.presentation_regrade(study=study, grader=request.user, number=number)
    except ValidationError as error:
        raise Http404(error.messages[0]) from error
    return redirect("admin:grading_page", study_id=study.pk, key=presentation.key)
