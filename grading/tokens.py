"""The grading page's signed token: which patient, when the page was shown, and a one-time key."""

import uuid
from dataclasses import dataclass

from django.core import signing
from django.utils import timezone

SALT = "grading.page"
MAX_AGE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class PageToken:
    patient_id: int
    grader_id: int
    shown_at: float
    submission: uuid.UUID
    regrade: bool


def page_token_make(*, patient_id: int, grader_id: int, regrade: bool) -> str:
    return signing.dumps(
        {
            "p": patient_id,
            "g": grader_id,
            "t": timezone.now().timestamp(),
            "s": uuid.uuid4().hex,
            "r": regrade,
        },
        salt=SALT,
        compress=True,
    )


def page_token_read(token: str) -> PageToken | None:
    """The token's content, or None when it is forged, damaged or older than a day."""
    try:
        data = signing.loads(token, salt=SALT, max_age=MAX_AGE_SECONDS)
        return PageToken(
            patient_id=int(data["p"]),
            grader_id=int(data["g"]),
            shown_at=float(data["t"]),
            submission=uuid.UUID(data["s"]),
            regrade=bool(data["r"]),
        )
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return None
