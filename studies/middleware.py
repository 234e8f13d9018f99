"""Uploads Django cannot parse answer a page that says why, instead of a bare 400."""

from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError

from .views import upload_unreadable


class UnreadableUploadMiddleware:
    """Parse a multipart body before the CSRF check or a view does, and explain a failure.

    Django refuses a part whose headers pass 1,024 bytes, which a file name of
    about 900 characters or more does: the person sees what to rename.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.content_type == "multipart/form-data":
            try:
                request.POST  # noqa: B018  (parsed here, where a failure can still be explained)
            except MultiPartParserError as error:
                return upload_unreadable(request, error)
        return self.get_response(request)
