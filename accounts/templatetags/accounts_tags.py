from datetime import timedelta

from django import template

register = template.Library()


@register.filter
def minutes(duration: timedelta) -> str:
    """A cool-off such as `timedelta(minutes=15)` as "15 minutes"."""
    count = max(1, round(duration.total_seconds() / 60))
    return f"{count} minute{'s' if count != 1 else ''}"
