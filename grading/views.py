"""The graders' pages inside the admin: dashboard, a study's queue, the grading page."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from studies.models import Patient, Study

from . import selectors, services
from .tokens import page_token_make, page_token_read

UPCOMING_SHOWN = 50


def _context(request: HttpRequest, **extra) -> dict:
    return {**admin.site.each_context(request), **extra}


def _study_or_403(request: HttpRequest, study_id: int) -> Study:
    study = selectors.assigned_study(study_id=study_id, grader=request.user)
    if study is None:
        raise PermissionDenied("You are not assigned to grade this study.")
    return study


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    studies = [
        (study, selectors.Progress.of(services.queue_sync(study=study, grader=request.user), study))
        for study in selectors.grader_studies(grader=request.user)
    ]
    return TemplateResponse(
        request, "grading/dashboard.html", _context(request, title="Grading", studies=studies)
    )


@require_GET
def study_queue(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _study_or_403(request, study_id)
    queue = services.queue_sync(study=study, grader=request.user)
    progress = selectors.Progress.of(queue, study)
    upcoming = selectors.queue_upcoming(queue=queue, limit=UPCOMING_SHOWN)
    graded = Paginator(selectors.queue_graded(queue=queue), 50).get_page(request.GET.get("page"))
    return TemplateResponse(
        request,
        "grading/study.html",
        _context(
            request,
            title=study.name,
            study=study,
            progress=progress,
            upcoming=[(progress.shown + number, entry) for number, entry in enumerate(upcoming, 1)],
            more_upcoming=max(0, progress.to_grade - len(upcoming)),
            graded=graded,
            graded_numbered=[(graded.start_index() + n, entry) for n, entry in enumerate(graded.object_list)],
        ),
    )


@require_GET
def next_patient(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _study_or_403(request, study_id)
    patient_id = selectors.next_patient_id(
        queue=services.queue_sync(study=study, grader=request.user, thorough=False)
    )
    if patient_id is None:  # before saying "done", look for patients the quick check cannot see
        patient_id = selectors.next_patient_id(queue=services.queue_sync(study=study, grader=request.user))
    if patient_id is None:
        messages.success(request, "You have graded every patient of this study. Thank you!")
        return redirect("admin:grading_study", study_id=study.pk)
    return redirect("admin:grading_patient", study_id=study.pk, patient_id=patient_id)


@require_http_methods(["GET", "POST"])
def grade_patient(request: HttpRequest, study_id: int, patient_id: int) -> HttpResponse:
    patient = (
        Patient.objects.select_related("study")
        .filter(pk=patient_id, study_id=study_id, study__graders=request.user, study__is_active=True)
        .first()
    )
    if patient is None:
        _study_or_403(request, study_id)
        raise Http404("No such patient in this study.")
    study = patient.study
    regrade = request.GET.get("regrade") == "1" or request.POST.get("regrade") == "1"
    errors: dict[str, list[str]] = {}
    answers: dict[str, str] = {}
    note = ""

    if request.method == "POST":
        answers = {key: value for key, value in request.POST.items() if key.startswith("answer-")}
        note = request.POST.get("note", "")
        token = page_token_read(request.POST.get("token", ""))
        if token is None or token.patient_id != patient.pk or token.grader_id != request.user.pk:
            errors["__all__"] = [
                "This page has expired or belongs to another patient. Check the answers and save again."
            ]
        else:
            try:
                services.grade_submit(
                    study=study,
                    patient=patient,
                    grader=request.user,
                    answers=answers,
                    submission=token.submission,
                    seconds=int(timezone.now().timestamp() - token.shown_at),
                    note=note,
                    regrade=token.regrade,
                )
            except ValidationError as error:
                errors = error.message_dict if hasattr(error, "error_dict") else {"__all__": error.messages}
            else:
                messages.success(request, "Saved.")
                return redirect("admin:grading_next", study_id=study.pk)
    elif regrade:
        mine = selectors.my_current_answers(patient=patient, grader=request.user)
        answers = {services.answer_key(gt, f): str(o) for (gt, f), o in mine["answers"].items() if o}
        note = mine["note"]

    queue = selectors.queue_of(study=study, grader=request.user) or services.queue_sync(
        study=study, grader=request.user
    )
    progress = selectors.Progress.of(queue, study)
    forms = selectors.grading_forms(study=study)
    for form in forms:
        for field_form in form.fields:
            key = services.answer_key(form.grade_type.pk, field_form.field.pk)
            field_form.key = key
            field_form.chosen = answers.get(key, "")
            field_form.errors = errors.get(key, [])
    if study.masked_codes:
        label = (
            "Re-grading a patient you graded"
            if regrade
            else f"Patient {progress.shown + 1} of {progress.expected_total}"
        )
    else:
        label = f"Patient {patient.code}" + (" (re-grade)" if regrade else "")
    context = _context(
        request,
        title=label,
        study=study,
        patient=patient,
        label=label,
        show_code=not study.masked_codes,
        images=selectors.patient_images(
            patient=patient, grader=request.user, randomized=study.randomized_order
        ),
        forms=forms,
        non_field_errors=errors.get("__all__", []),
        note=note,
        regrade=regrade,
        progress=progress,
        token=page_token_make(patient_id=patient.pk, grader_id=request.user.pk, regrade=regrade),
        action=reverse("admin:grading_patient", args=[study.pk, patient.pk])
        + ("?regrade=1" if regrade else ""),
    )
    return TemplateResponse(request, "grading/patient.html", context, status=400 if errors else 200)
