"""A user's own account page, inside the admin."""

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from . import services
from .forms import ProfileForm


@staff_member_required
def profile(request: HttpRequest) -> HttpResponse:
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        services.profile_update(user=request.user, **form.cleaned_data)
        messages.success(request, "Your details were saved.")
        return redirect("accounts:profile")
    context = {
        **admin.site.each_context(request),
        "title": "My account",
        "form": form,
        "groups": request.user.groups.order_by("name"),
    }
    return TemplateResponse(request, "accounts/profile.html", context)
