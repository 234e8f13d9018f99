"""What the studies app tells apps built on it, which it does not know (grading keeps queues).

Sent by studies' own services, inside the transaction that made the change.
"""

from django.dispatch import Signal

# A study gained patients in one go (bulk inserts that send no post_save): study, patient_ids.
patients_added = Signal()
