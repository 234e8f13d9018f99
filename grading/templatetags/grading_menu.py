"""The admin's menus: the grading pages are offered only to those who have a study to grade."""

from django import template

from grading import selectors

register = template.Library()


@register.simple_tag(takes_context=True)
def grades_something(context) -> bool:
    """Whether the signed-in user is assigned to an active study: one query a request, kept on the request."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return False
    if not hasattr(request, "gc_grades_something"):
        request.gc_grades_something = selectors.grader_studies(grader=user).exists()
    return request.gc_grades_something
