"""403, 404 and 500 pages in the admin's look, each with the site's name and a way back."""

import pytest
from django.urls import path, reverse

from urls import handler403, handler404, urlpatterns  # noqa: F401  (this module serves as a URLconf too)


def boom(request):
    raise RuntimeError("a bug")


urlpatterns = [*urlpatterns, path("boom/", boom)]


def test_grader_opening_a_staff_page_gets_the_styled_403_inside_the_admin(client_for, grader):
    response = client_for(grader).get(reverse("admin:studies_study_changelist"))

    assert response.status_code == 403
    page = response.content.decode()
    assert 'data-status="403"' in page and "You may not open this page" in page
    assert "Grading Center" in page and 'id="jazzy-navbar"' in page  # the admin's header and menus
    assert f'href="{reverse("admin:index")}"' in page
    assert "vendor/adminlte/css/adminlte.min.css" in page


def test_403_says_why_in_the_words_of_the_view(client_for, grader, study):
    response = client_for(grader).get(reverse("admin:grading_study", args=[study.pk]))

    assert response.status_code == 403
    assert "You are not assigned to grade this study." in response.content.decode()


def test_anonymous_visitor_gets_the_styled_404_with_a_way_to_sign_in(client, db):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    page = response.content.decode()
    assert 'data-status="404"' in page and "<code>/no-such-page/</code>" in page
    assert "Grading Center" in page and "login-box" in page  # the sign-in page's card
    assert f'href="{reverse("admin:login")}"' in page
    assert "Resolver404" not in page and "tried" not in page


def test_staff_get_the_404_inside_the_admin_with_the_views_reason(client_for, collector):
    response = client_for(collector).get(reverse("admin:studies_study_import", args=[987654]))

    assert response.status_code == 404
    page = response.content.decode()
    assert 'data-status="404"' in page and 'id="jazzy-navbar"' in page
    assert "No Study matches the given query." in page


@pytest.mark.urls(__name__)
def test_500_page_renders_without_a_request_context_or_database(client):
    """No `db` fixture: any query while rendering the page would fail this test."""
    client.raise_request_exception = False

    response = client.get("/boom/")

    assert response.status_code == 500
    page = response.content.decode()
    assert 'data-status="500"' in page and "Something went wrong on our side" in page
    assert "<b>Grading Center</b>" in page and 'href="/admin/"' in page
    assert "vendor/adminlte/css/adminlte.min.css" in page and "gradingcenter/admin.css" in page
    assert "a bug" not in page and "Traceback" not in page
