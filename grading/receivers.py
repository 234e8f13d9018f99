"""Keeping graders' queues complete as studies change, whichever path changed them.

Queues are an index of the studies app's patients and graders, which that
app does not know of: these receivers build it in the same transaction as
the change (a large study's new grader by a background task right after), so
no grader's request ever has to.
"""

from django.db import transaction
from django.db.models.signals import m2m_changed, post_save, pre_delete
from django.dispatch import receiver

from studies.models import Patient, Study
from studies.signals import patients_added

from . import services
from .models import GraderQueue
from .tasks import queue_build_task

# Patients a study may have for a newly assigned grader's queue to be built within the assigning request.
QUEUE_BUILT_AT_ONCE = 20_000


@receiver(post_save, sender=Patient, dispatch_uid="grading.patient_created")
def patient_created(sender, instance: Patient, created: bool, raw: bool = False, **kwargs) -> None:
    if created and not raw:
        services.queue_entries_add(study=instance.study, patient_ids=[instance.pk])


@receiver(patients_added, dispatch_uid="grading.patients_added")
def patients_created(sender, study: Study, patient_ids, **kwargs) -> None:
    services.queue_entries_add(study=study, patient_ids=patient_ids)


@receiver(pre_delete, sender=Patient, dispatch_uid="grading.patient_deleting")
def patient_deleting(sender, instance: Patient, **kwargs) -> None:
    services.queue_patient_removed(patient=instance)


@receiver(m2m_changed, sender=Study.graders.through, dispatch_uid="grading.graders_assigned")
def graders_assigned(sender, instance, action: str, reverse: bool, pk_set, **kwargs) -> None:
    """A grader assigned to a study (from either side) gets their queue of it at once.

    A grader taken off a study gives back the slots their open pages held.
    """
    if action == "post_remove" and pk_set:
        queues = GraderQueue.objects.filter(
            **(
                {"study_id__in": pk_set, "grader": instance}
                if reverse
                else {"study": instance, "grader_id__in": pk_set}
            )
        )
        services.presentations_withdraw(queues=queues)
        return
    if action != "post_add" or not pk_set:
        return
    from django.contrib.auth import get_user_model

    if reverse:  # user.graded_studies.add(study, ...)
        for study in Study.objects.filter(pk__in=pk_set):
            _queues_build_soon(study=study, graders=[instance])
    else:
        _queues_build_soon(study=instance, graders=list(get_user_model().objects.filter(pk__in=pk_set)))


def _queues_build_soon(*, study: Study, graders: list) -> None:
    """Here and now for most studies; a large one's queues are built by a background task after commit."""
    if Patient.objects.filter(study=study).count() <= QUEUE_BUILT_AT_ONCE:
        for grader in graders:
            services.queue_build(study=study, grader=grader)
        return
    for grader in graders:
        transaction.on_commit(lambda grader_id=grader.pk: queue_build_task.enqueue(study.pk, grader_id))
