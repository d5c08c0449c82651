"""Opening an existing study for a report or the dashboard, without creating anything."""

from __future__ import annotations

from pathlib import Path

import optuna

from bstune.errors import BstuneError, StorageError

__all__ = ["load_existing_study", "existing_storage"]


def existing_storage(storage: str) -> optuna.storages.BaseStorage:
    """Open a storage URL that must already hold studies: a missing SQLite or journal file is an
    error here, never a new empty file (opening it would create one)."""
    from bstune.storage import mask_url, resolve_storage

    path: str | None = None
    if storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///") :].split("?", 1)[0]
        if path == ":memory:" or not path:
            path = None
    elif storage.startswith("journal:"):
        path = storage[len("journal:") :].removeprefix("//")
    elif "://" not in storage and storage.endswith(".log"):
        path = storage
    if path is not None and not Path(path).is_file():
        raise StorageError(f"storage {mask_url(storage)!r}: the file {path!r} does not exist")
    resolved = resolve_storage(storage)
    if resolved is None:  # resolve_storage maps only None to None
        raise StorageError("a storage URL is needed")
    return resolved


def load_existing_study(storage: str | optuna.storages.BaseStorage, study_name: str | None = None) -> optuna.Study:
    """The study ``study_name`` in ``storage``; without a name, the storage's only study.

    Raises:
        BstuneError: No such study (the message lists the studies there), or several studies and
            no name.
    """
    storage_obj = existing_storage(storage) if isinstance(storage, str) else storage
    names = [s.study_name for s in storage_obj.get_all_studies()]
    if study_name is None:
        if len(names) != 1:
            listed = ", ".join(repr(n) for n in names) if names else "none"
            raise BstuneError(f"the storage holds {len(names)} studies ({listed}); choose one with --study-name")
        study_name = names[0]
    if study_name not in names:
        listed = ", ".join(repr(n) for n in names) if names else "none"
        raise BstuneError(f"no study named {study_name!r} in the storage; studies there: {listed}")
    return optuna.load_study(study_name=study_name, storage=storage_obj)
