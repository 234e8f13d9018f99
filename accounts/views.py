"""A user's own account page, inside the admin, and the throttled password reset."""

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from . import services
from .forms import ProfileForm
from .throttling import client_address, password_reset_allowed


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


class PasswordResetView(auth_views.PasswordResetView):
    """Django's password reset, sending only as many e-mails as `password_reset_allowed` lets through.

    A throttled request gets the same "e-mail sent" page as any other, so the page never tells
    whether an address has an account or how often it was asked for.
    """

    def form_valid(self, form):
        if password_reset_allowed(email=form.cleaned_data["email"], address=client_address(self.request)):
            return super().form_valid(form)
        return HttpResponseRedirect(self.get_success_url())
