"""HTTP for studies beyond the admin's own pages: private files and field-day imports."""

import json
import mimetypes

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from . import selectors, services, workers
from .forms import ImportPartForm, ImportStartForm
from .models import ImageImport, Study


@require_GET
def stored_file(request: HttpRequest, key: str) -> HttpResponse:
    """A photo or thumbnail from local storage, for users allowed to see that photo only."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    image = selectors.image_for_file_key(key=key)
    if image is None:
        raise Http404("No such file.")
    if not selectors.user_may_view_image(user=request.user, image=image):
        raise PermissionDenied("You may not see this photo.")
    return stored_file_response(key)


def stored_file_response(key: str) -> FileResponse:
    """A stored file, streamed, kept out of shared caches; 404 when storage has lost it."""
    try:
        handle = default_storage.open(key, "rb")
    except FileNotFoundError:
        raise Http404("The stored file is missing.") from None
    response = FileResponse(handle, content_type=mimetypes.guess_type(key)[0] or "application/octet-stream")
    response["Cache-Control"] = "private, max-age=300"
    response["X-Content-Type-Options"] = "nosniff"
    return response


UNREADABLE_HEADERS = "Request max total header size exceeded."


def upload_unreadable(request: HttpRequest, error: Exception) -> HttpResponse:
    """400 for an upload whose body Django could not parse, saying why: as JSON or as an admin page."""
    if str(error) == UNREADABLE_HEADERS:
        message = (
            "A file name in this upload is too long to be read (a name of up to 255 characters is safe). "
            "Rename the file and upload it again; nothing was stored."
        )
    else:
        message = f"The upload could not be read ({error}); nothing was stored. Try again."
    if "application/json" in request.headers.get("Accept", ""):
        return _error(message)
    context = {
        **admin.site.each_context(request),
        "title": "The upload could not be read",
        "message": message,
        "back_url": request.get_full_path(),
    }
    # Rendered here: a response from a middleware is not rendered by the handler.
    return TemplateResponse(request, "admin/studies/upload_unreadable.html", context, status=400).render()


def _may_import(request: HttpRequest) -> bool:
    return request.user.has_perms(["studies.add_patient", "studies.add_image"])


def _error(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _messages(error: ValidationError) -> str:
    return " ".join(error.messages)


def import_page(model_admin):
    """The field-day import page of a study, rendered inside the admin."""

    def view(request: HttpRequest, study_id: int) -> HttpResponse:
        study = get_object_or_404(Study, pk=study_id)
        if not _may_import(request):
            raise PermissionDenied
        workers.warm()  # the embedded run's pool starts while the user picks the files
        context = {
            **model_admin.admin_site.each_context(request),
            "title": f"Import a field day into {study.name}",
            "opts": Study._meta,
            "study": study,
            "imports": selectors.imports_of(study=study),
            "part_bytes": settings.IMPORT_PART_BYTES,
            "start_url": reverse("admin:studies_study_import_start", args=[study.pk]),
        }
        return TemplateResponse(request, "admin/studies/study/import.html", context)

    return view


@require_POST
def import_start(request: HttpRequest, study_id: int) -> JsonResponse:
    study = get_object_or_404(Study, pk=study_id)
    if not _may_import(request):
        return _error("You may not import photos.", 403)
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return _error("The request body must be JSON.")
    form = ImportStartForm({"source": body.get("source"), "files": json.dumps(body.get("files"))})
    if not form.is_valid():
        return _error("Choose a ZIP file or a folder to import.")
    try:
        image_import = services.image_import_start(
            study=study,
            source=form.cleaned_data["source"],
            files=form.cleaned_data["files"],
            created_by=request.user,
        )
    except ValidationError as error:
        return _error(_messages(error))
    workers.warm()
    return JsonResponse(
        {
            "id": image_import.pk,
            "part_bytes": image_import.part_bytes,
            "parts_total": image_import.parts_total,
            # a ZIP's directory is at its end: sent first, its photos can be prepared as their parts arrive
            "parts_first": [image_import.parts_total - 1]
            if image_import.source == ImageImport.Source.ZIP and image_import.parts_total > 1
            else [],
            "part_url": reverse("admin:studies_imageimport_part", args=[image_import.pk]),
            "finish_url": reverse("admin:studies_imageimport_finish", args=[image_import.pk]),
            "status_url": reverse("admin:studies_imageimport_status", args=[image_import.pk]),
        },
        status=201,
    )


def _import_for(request: HttpRequest, import_id: int) -> ImageImport:
    image_import = get_object_or_404(ImageImport.objects.defer("manifest"), pk=import_id)
    if (
        not _may_import(request)
        or image_import.created_by_id != request.user.pk
        and not request.user.is_superuser
    ):
        raise PermissionDenied
    return image_import


@require_POST
def import_part(request: HttpRequest, import_id: int) -> JsonResponse:
    """One part: the raw body (what the page sends, `?part_index=N`), or a form with part_index and data."""
    image_import = _import_for(request, import_id)
    if request.content_type == "application/octet-stream":
        part = _raw_part(request, image_import)
        if isinstance(part, JsonResponse):
            return part
        part_index, data = part
        size = len(data)
    else:
        form = ImportPartForm(request.POST, request.FILES)
        if not form.is_valid():
            return _error("A part needs part_index and data.")
        part_index, data = form.cleaned_data["part_index"], form.cleaned_data["data"]
        size = data.size
    try:
        wanted = services.image_import_part_save(
            image_import=image_import, part_index=part_index, data=data, size=size
        )
    except services.StorageFailed as error:
        return _error(_messages(error), 503)  # the page's script sends the part again
    except ValidationError as error:
        return _error(_messages(error))
    return JsonResponse({"ok": True, "wanted": wanted})


def _raw_part(request: HttpRequest, image_import: ImageImport) -> tuple[int, bytes] | JsonResponse:
    """A part sent as the request's body: read whole (a part is a few MB), never more than a part."""
    try:
        part_index = int(request.GET.get("part_index", ""))
        size = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        part_index = -1
    if part_index < 0:
        return _error("A part needs part_index in its address and its bytes, with their length, as the body.")
    if size > image_import.part_bytes:
        return _error(f"Part {part_index} is {size} bytes; a part is at most {image_import.part_bytes}.")
    data = request.read(size)
    if len(data) != size:
        return _error(f"Part {part_index} arrived incomplete ({len(data)} of {size} bytes).")
    return part_index, data


@require_POST
def import_finish(request: HttpRequest, import_id: int) -> JsonResponse:
    image_import = _import_for(request, import_id)
    try:
        services.image_import_finish(image_import=image_import)
    except ValidationError as error:
        return _error(_messages(error))
    return import_status(request, import_id)


@staff_member_required
def import_status(request: HttpRequest, import_id: int) -> JsonResponse:
    image_import = get_object_or_404(ImageImport.objects.defer("manifest"), pk=import_id)
    if (
        not request.user.has_perm("studies.view_imageimport")
        and image_import.created_by_id != request.user.pk
    ):
        return _error("Not yours.", 403)
    if not image_import.is_finished and services.image_import_resume(image_import=image_import):
        image_import.refresh_from_db()  # handing chunks out again may have finished or refused it
    return JsonResponse(
        {
            "id": image_import.pk,
            "status": image_import.status,
            "status_label": image_import.get_status_display(),
            "finished": image_import.is_finished,
            "files_total": image_import.files_total,
            "files_done": image_import.files_done,
            "patients_created": image_import.patients_created,
            "images_created": image_import.images_created,
            "errors": image_import.errors,
            "report_url": reverse("admin:studies_imageimport_change", args=[image_import.pk]),
            "patients_url": reverse("admin:studies_patient_changelist")
            + f"?study__id__exact={image_import.study_id}",
        }
    )
