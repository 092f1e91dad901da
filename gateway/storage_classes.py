"""The storage SOP classes the gateway accepts: every one pynetdicom lists, and the retired ones old modalities
still send (``retired_storage_classes.toml``, with its source)."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources

from pydicom.uid import UID
from pynetdicom import AllStoragePresentationContexts


@cache
def retired_storage_classes() -> tuple[str, ...]:
    table = tomllib.loads(resources.files("gateway").joinpath("retired_storage_classes.toml").read_text(encoding="utf-8"))
    return tuple(str(entry["uid"]) for entry in table["class"])


@cache
def storage_classes() -> tuple[str, ...]:
    """Every storage SOP class accepted, pynetdicom's first, in a stable order."""
    listed = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    return (*listed, *(uid for uid in retired_storage_classes() if uid not in listed))


@cache
def image_storage_classes() -> frozenset[str]:
    """Storage classes whose IOD requires pixel data (their names say 'Image Storage')."""
    return frozenset(uid for uid in storage_classes() if "ImageStorage" in UID(uid).keyword)
