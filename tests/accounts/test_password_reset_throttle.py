"""Password reset e-mails are capped per e-mail address and per client address, and the page never says so."""

from django.core import mail
from django.test import Client
from django.urls import reverse

from tests.factories import UserFactory

RESET = "/admin/password_reset/"


def ask(client: Client, email: str, address: str = "127.0.0.1"):
    return client.post(RESET, {"email": email}, REMOTE_ADDR=address)


def test_at_most_three_reset_emails_an_hour_to_one_user(client, db):
    UserFactory(username="forgetful", email="forgetful@example.org")
    responses = [ask(Client(), "forgetful@example.org", address=f"10.0.1.{n}") for n in range(28)]
    assert len(mail.outbox) == 3
    assert all(message.to == ["forgetful@example.org"] for message in mail.outbox)
    # Every answer, throttled or not, is the same "e-mail sent" redirect.
    assert {(r.status_code, r["Location"]) for r in responses} == {(302, reverse("password_reset_done"))}


def test_the_cap_ignores_the_case_of_the_address(client, db):
    UserFactory(username="forgetful", email="forgetful@example.org")
    for email in [
        "forgetful@example.org",
        "Forgetful@example.org",
        "FORGETFUL@EXAMPLE.ORG",
        "forgetful@Example.org",
    ]:
        ask(client, email)
    assert len(mail.outbox) == 3


def test_one_client_address_cannot_mail_everyone(client, db, settings):
    settings.PASSWORD_RESET_REQUESTS_PER_HOUR = 5
    for n in range(8):
        UserFactory(username=f"user{n}", email=f"user{n}@example.org")
    for n in range(8):
        assert ask(client, f"user{n}@example.org").status_code == 302
    assert len(mail.outbox) == 5
    ask(Client(), "user7@example.org", address="10.0.2.1")  # another address still gets through
    assert len(mail.outbox) == 6


def test_an_unknown_address_gets_the_same_answer_and_no_email(client, db):
    for _ in range(5):
        response = ask(client, "nobody@example.org")
        assert (response.status_code, response["Location"]) == (302, reverse("password_reset_done"))
    assert mail.outbox == []
