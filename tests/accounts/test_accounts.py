"""Signing in and out, passwords, a user's own details."""

import re

from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

from tests.factories import UserFactory


def test_login_and_logout_through_the_admin(client, collector):
    response = client.post(
        reverse("admin:login"), {"username": "collector", "password": "pass-word-123", "next": "/admin/"}
    )
    assert response.status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200
    assert client.post(reverse("admin:logout")).status_code == 200
    assert client.get(reverse("admin:index")).status_code == 302


def test_wrong_password_is_refused(client, collector):
    response = client.post(reverse("admin:login"), {"username": "collector", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter the correct username and password" in response.content.decode()


def test_password_change(client_for, collector):
    client = client_for(collector)
    response = client.post(
        reverse("admin:password_change"),
        {
            "old_password": "pass-word-123",
            "new_password1": "eyelid-follicle-42",
            "new_password2": "eyelid-follicle-42",
        },
    )
    assert response.status_code == 302
    collector.refresh_from_db()
    assert collector.check_password("eyelid-follicle-42")


def test_password_reset_by_email(client, db):
    user = UserFactory(username="forgetful", email="forgetful@example.org")
    login_page = client.get(reverse("admin:login")).content.decode()
    assert reverse("admin_password_reset") in login_page
    response = client.post(reverse("admin_password_reset"), {"email": "forgetful@example.org"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    link = re.search(r"https?://[^/]+(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    form_url = client.get(link)["Location"]
    response = client.post(
        form_url, {"new_password1": "trichiasis-lash-77", "new_password2": "trichiasis-lash-77"}
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("trichiasis-lash-77")


def test_user_edits_their_own_name_and_email(client_for, grader):
    client = client_for(grader)
    page = client.get(reverse("accounts:profile"))
    assert page.status_code == 200
    assert "Graders" in page.content.decode()
    response = client.post(
        reverse("accounts:profile"),
        {"first_name": "Grace", "last_name": "Hopper", "email": "grace@example.org"},
    )
    assert response.status_code == 302
    grader.refresh_from_db()
    assert (grader.first_name, grader.last_name, grader.email) == ("Grace", "Hopper", "grace@example.org")


def test_profile_refuses_a_bad_email_and_keeps_the_input(client_for, grader):
    response = client_for(grader).post(
        reverse("accounts:profile"), {"first_name": "Grace", "last_name": "", "email": "not-an-address"}
    )
    assert response.status_code == 200
    assert "Enter a valid email address" in response.content.decode()
    assert 'value="Grace"' in response.content.decode()
    grader.refresh_from_db()
    assert grader.first_name != "Grace"


def test_profile_cannot_make_anyone_staff_or_superuser(client_for, grader):
    client_for(grader).post(
        reverse("accounts:profile"),
        {
            "first_name": "G",
            "last_name": "",
            "email": "g@example.org",
            "is_superuser": "on",
            "username": "root",
        },
    )
    grader.refresh_from_db()
    assert not grader.is_superuser and grader.username == "grader"


def test_profile_needs_login(client, db):
    assert client.get(reverse("accounts:profile")).status_code == 302
    assert get_user_model().objects.count() == 0
