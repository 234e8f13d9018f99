"""Sign-in lockout (django-axes, in the database): admin and API share it, the right password is
refused while it lasts, and it ends after the cool-off or when an administrator lifts it."""

import base64
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from axes.utils import reset
from django.test import Client
from django.utils import timezone
from knox.models import AuthToken

from accounts import roles
from settings.base import lockout_parameters
from tests.factories import UserFactory

PASSWORD = "pass-word-123"
ADMIN_LOGIN = "/admin/login/"
API_LOGIN = "/api/auth/login/"


@pytest.fixture
def dana(db):
    return UserFactory(username="dana", groups=[roles.DATA_TEAM])


def admin_sign_in(client: Client, username: str, password: str, address: str = "127.0.0.1"):
    return client.post(
        ADMIN_LOGIN, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=address
    )


def api_sign_in(client: Client, username: str, password: str, address: str = "127.0.0.1"):
    raw = base64.b64encode(f"{username}:{password}".encode()).decode()
    return client.post(API_LOGIN, HTTP_AUTHORIZATION=f"Basic {raw}", REMOTE_ADDR=address)


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def fail_six_times_on_the_admin(client: Client, username: str = "dana", address: str = "127.0.0.1") -> None:
    for n in range(6):
        response = admin_sign_in(client, username, f"wrong-{n}", address)
        assert response.status_code in (200, 429)


def test_the_right_password_is_refused_on_the_admin_after_six_wrong_ones(client, dana):
    fail_six_times_on_the_admin(client)
    response = admin_sign_in(client, "dana", PASSWORD)
    assert response.status_code == 429
    page = response.content.decode()
    assert "Sign-in paused" in page
    assert "15 minutes" in page
    assert "jazzmin" in page or "login-box" in page  # the sign-in page's look
    assert not signed_in(client)


def test_the_lockout_is_shared_by_every_client_and_server(client, dana):
    fail_six_times_on_the_admin(client)
    # Another browser, same user and address: the attempts are counted in the database, not the session.
    other = Client()
    assert admin_sign_in(other, "dana", PASSWORD).status_code == 429
    assert not signed_in(other)
    # The same user from another address is locked, and so is the address for another user.
    assert admin_sign_in(Client(), "dana", PASSWORD, address="10.0.0.9").status_code == 429
    UserFactory(username="colleague", groups=[roles.GRADERS])
    assert admin_sign_in(Client(), "colleague", PASSWORD).status_code == 429
    # Someone else from elsewhere is not affected.
    fresh = Client()
    assert admin_sign_in(fresh, "colleague", PASSWORD, address="10.0.0.10").status_code == 302
    assert signed_in(fresh)


def test_the_right_password_is_refused_on_the_api_after_six_wrong_ones(client, dana):
    statuses = [api_sign_in(client, "dana", f"wrong-{n}").status_code for n in range(6)]
    assert statuses == [401] * 4 + [429] * 2  # the fifth failure locks
    response = api_sign_in(client, "dana", PASSWORD)
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.json()["detail"]
    assert int(response["Retry-After"]) > 0
    assert not AuthToken.objects.exists()


def test_wrong_passwords_on_the_admin_lock_the_api_too(client, dana):
    fail_six_times_on_the_admin(client)
    assert api_sign_in(Client(), "dana", PASSWORD).status_code == 429
    assert not AuthToken.objects.exists()


def test_fewer_failures_than_the_limit_do_not_lock(client, dana):
    for n in range(4):
        admin_sign_in(client, "dana", f"wrong-{n}")
    assert api_sign_in(Client(), "dana", PASSWORD).status_code == 200


def test_signing_in_to_ones_own_account_does_not_wipe_failures_on_another(client, dana):
    UserFactory(username="mallory", groups=[roles.GRADERS])
    for round_ in range(3):
        for n in range(2):
            admin_sign_in(Client(), "dana", f"guess-{round_}-{n}")
        admin_sign_in(Client(), "mallory", PASSWORD)  # from the same address as the guesses
    assert admin_sign_in(Client(), "dana", PASSWORD, address="10.0.0.77").status_code == 429


def test_the_cool_off_ends_the_lockout(client, dana):
    fail_six_times_on_the_admin(client)
    assert admin_sign_in(client, "dana", PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    response = admin_sign_in(client, "dana", PASSWORD)
    assert response.status_code == 302
    assert signed_in(client)


def test_the_cool_off_is_a_setting(client, dana, settings):
    settings.AXES_COOLOFF_TIME = timedelta(minutes=1)
    fail_six_times_on_the_admin(client)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=2))
    assert api_sign_in(client, "dana", PASSWORD).status_code == 200


def test_an_administrator_lifts_the_lock(client, dana):
    fail_six_times_on_the_admin(client)
    reset(username="dana")
    reset(ip="127.0.0.1")
    assert api_sign_in(client, "dana", PASSWORD).status_code == 200


def test_locking_only_the_pair_leaves_colleagues_behind_one_address_alone(client, dana, settings):
    settings.AXES_LOCKOUT_PARAMETERS = lockout_parameters("username+ip_address")
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    UserFactory(username="colleague", groups=[roles.GRADERS])
    fail_six_times_on_the_admin(client)
    assert admin_sign_in(Client(), "dana", PASSWORD).status_code == 429
    assert admin_sign_in(Client(), "colleague", PASSWORD).status_code == 302
    assert admin_sign_in(Client(), "dana", PASSWORD, address="10.0.0.9").status_code == 302


def test_the_client_address_is_read_past_the_trusted_proxies_only(client, dana, settings):
    settings.NUM_PROXIES = 1
    for n in range(6):  # the attacker claims a new address each time; the load balancer appends the real one
        client.post(
            ADMIN_LOGIN,
            {"username": f"someone{n}", "password": "wrong"},
            HTTP_X_FORWARDED_FOR=f"10.9.9.{n}, 203.0.113.7",
        )
    response = client.post(
        ADMIN_LOGIN, {"username": "dana", "password": PASSWORD}, HTTP_X_FORWARDED_FOR="203.0.113.7"
    )
    assert response.status_code == 429
    assert AccessAttempt.objects.filter(ip_address="203.0.113.7").exists()
