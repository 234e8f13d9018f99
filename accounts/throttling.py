"""Who is asking, and how often: the client address behind the proxies, and password-reset limits.

Counts live in the default cache, which production keeps in the database so that every
app server (and every gunicorn worker) shares them.
"""

import hashlib

from django.conf import settings
from django.core.cache import cache

HOUR = 60 * 60


def client_address(request) -> str:
    """The client's address: REMOTE_ADDR, or X-Forwarded-For read past the NUM_PROXIES we trust.

    The same rule as the API's throttles (DRF's NUM_PROXIES), so a client cannot pick its own
    address by sending the header, and all clients behind the load balancer are not one address.
    """
    remote_addr = request.META.get("REMOTE_ADDR", "")
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if not settings.NUM_PROXIES or not forwarded:
        return remote_addr
    addresses = forwarded.split(",")
    return addresses[-min(settings.NUM_PROXIES, len(addresses))].strip()


def _counted(key: str, limit: int) -> bool:
    """Count one more within the hour that `key`'s window started; True while within `limit`."""
    cache.add(key, 0, timeout=HOUR)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=HOUR)
        count = 1
    return count <= limit


def password_reset_allowed(*, email: str, address: str) -> bool:
    """Whether a reset e-mail may go to `email` for a request from `address`, counting this request.

    At most PASSWORD_RESET_EMAILS_PER_HOUR per e-mail address and PASSWORD_RESET_REQUESTS_PER_HOUR
    per client address, whether or not an account has that e-mail (the answer must not tell).
    """
    email_digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    per_address = _counted(f"password-reset:address:{address}", settings.PASSWORD_RESET_REQUESTS_PER_HOUR)
    per_email = _counted(f"password-reset:email:{email_digest}", settings.PASSWORD_RESET_EMAILS_PER_HOUR)
    return per_address and per_email
