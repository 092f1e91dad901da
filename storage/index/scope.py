"""What a referring physician or a share link may see, as a condition on the index's patients and studies.

A referring physician sees the studies of the patients linked to them and the
studies granted to them; a share link, its one study. A patient is linked by
Patient ID *and* Issuer of Patient ID (``user_patient_ids``): MRN-1 of one
hospital opens nothing of another hospital's MRN-1. A link that names no
issuer (``user_patients``: made before the patient was in the index, or by an
earlier release) opens the patient with that ID only while the index holds
the ID under a single issuer; once another issuer's patient has it too, it
opens neither, until it is made again with the issuer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, false, or_, select

from storage.index.schema import patients, studies, user_patient_ids, user_patients, user_studies


@dataclass(frozen=True)
class Scope:
    """The account whose links and grants open studies (``user_pk``), and studies open besides (``study_uids``)."""

    user_pk: int | None = None
    study_uids: tuple[str, ...] = ()


def scope_condition(scope: Scope, with_studies: bool) -> Any:
    """The SQL condition on ``patients`` (and ``studies`` when ``with_studies``) that a row is in the scope."""
    allowed: list[Any] = []
    if scope.user_pk is not None:
        named = user_patient_ids.c
        allowed.append(
            select(named.user_pk)
            .where(named.user_pk == scope.user_pk, named.patient_id == patients.c.patient_id, named.issuer == patients.c.issuer)
            .exists()
        )  # fmt: skip
        same_id = patients.alias("same_id")
        allowed.append(
            and_(
                select(user_patients.c.user_pk)
                .where(user_patients.c.user_pk == scope.user_pk, user_patients.c.patient_id == patients.c.patient_id)
                .exists(),
                ~select(same_id.c.pk).where(same_id.c.patient_id == patients.c.patient_id, same_id.c.pk != patients.c.pk).exists(),
            )
        )  # fmt: skip
        if with_studies:
            granted = user_studies.c
            allowed.append(
                select(granted.user_pk).where(granted.user_pk == scope.user_pk, granted.study_uid == studies.c.study_uid).exists()
            )
    if with_studies and scope.study_uids:
        allowed.append(studies.c.study_uid.in_(scope.study_uids))
    return or_(*allowed) if allowed else false()
