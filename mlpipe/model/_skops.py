"""``serializer="skops"``: fitted steps saved without pickle, a model given as code.

With this serializer a fitted step is saved with :func:`skops.io.dumps` (the stage
run's ``stage/stage.skops`` and the model's ``stages/`` artifact) and loaded with
:func:`mlpipe.model._trusted.loads`, which refuses every type that neither skops
nor mlpipe's explicit allow-list trusts. The raw-input model is logged as code
(``mlpipe/model/_skops_model.py`` and copies of ``_raw.py`` and ``_trusted.py``),
not as a pickled object, so loading it unpickles nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlpipe.exceptions import SerializationError
from mlpipe.model import _raw, _skops_model, _trusted

__all__ = ["check_steps", "dumps", "model_code"]

# The model's loader file, as MLflow keeps it in the model directory.
_LOADER = "raw_input_model.py"


def _dumps(obj: Any, what: str) -> bytes:
    import skops.io

    try:
        return bytes(skops.io.dumps(obj))
    except Exception as error:
        raise SerializationError(
            f"serializer='skops' cannot save {what}: {error!r}. Use the default "
            "serializer='cloudpickle' for this pipeline."
        ) from error


def _untrusted_message(found: dict[str, list[str]]) -> str:
    from skops.io.exceptions import UNTRUSTED_TYPE_REASONS

    holds = "; ".join(f"{what} holds {types}" for what, types in found.items())
    notes = [
        f" skops distrusts {name} on purpose: {UNTRUSTED_TYPE_REASONS[name].split('. ')[0]}."
        for name in sorted({t for types in found.values() for t in types})
        if name in UNTRUSTED_TYPE_REASONS
    ]
    return (
        "serializer='skops' saves fitted steps without pickle and loads only the types "
        "that skops trusts (scikit-learn's estimators, numpy, scipy, builtins) and those "
        f"on mlpipe's allow-list {list(_trusted.TRUSTED)}; {holds}."
        + "".join(notes)
        + " Use the default serializer='cloudpickle' for this pipeline (its model then "
        "runs pickled code when it is loaded: load it only from stores you trust), or "
        "build these steps from trusted classes."
    )


def check_steps(steps: Iterable[tuple[str, Any]]) -> None:
    """Raise unless every step, as it is now (usually unfitted), holds only trusted types.

    Run before anything is logged, so that a class of the user's own fails the fit
    at once. Types that only fitting brings in (a tree, say) are caught by
    :func:`dumps` once the step is fitted.

    Raises
    ------
    SerializationError
        Naming each step's untrusted types and what to do instead.
    """
    found = {}
    for name, step in steps:
        if step is None or step == "passthrough":
            continue
        untrusted = _trusted.untrusted_types(_dumps(step, f"step {name!r}"))
        if untrusted:
            found[f"step {name!r}"] = untrusted
    if found:
        raise SerializationError(_untrusted_message(found))


def dumps(obj: Any) -> tuple[bytes, set[str]]:
    """Save a fitted step with skops; return its bytes and the modules it refers to.

    Raises
    ------
    SerializationError
        If skops cannot save it or it holds a type that would not load.
    """
    what = f"the fitted {type(obj).__name__}"
    data = _dumps(obj, what)
    untrusted = _trusted.untrusted_types(data)
    if untrusted:
        raise SerializationError(_untrusted_message({what: untrusted}))
    return data, _trusted.modules_of(data)


def loads(data: bytes) -> Any:
    """Load what :func:`dumps` saved, checking its types; never unpickles.

    Raises
    ------
    SerializationError
        If it holds an untrusted type or is not a skops file.
    """
    try:
        return _trusted.loads(data, "a stored fitted step")
    except _trusted.UntrustedTypesError as error:
        raise SerializationError(str(error)) from error
    except Exception as error:
        raise SerializationError(f"Cannot read a stored skops step: {error!r}") from error


@contextmanager
def model_code(
    folder: Path, stages: list[tuple[str, str, bytes]]
) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """Write the code model of ``stages`` into ``folder``, for ``Model.log``.

    Yields the ``python_model`` path, the ``code_paths`` and the ``artifacts``
    (the ``stages`` folder: one skops file per step and their order). While the
    context is open the copies are importable, since MLflow runs the model's code
    once while logging it.
    """
    wrong = [name for name, serializer, _ in stages if serializer != "skops"]
    if wrong:
        raise SerializationError(f"Steps {wrong} were not saved with skops; cannot log them.")
    code = folder / "code"
    code.mkdir()
    code_paths = []
    for module, name in ((_raw, _skops_model.RAW_MODULE), (_trusted, _skops_model.TRUSTED_MODULE)):
        path = code / f"{name}.py"
        shutil.copyfile(str(module.__file__), path)
        code_paths.append(str(path))
    loader = folder / _LOADER
    shutil.copyfile(str(_skops_model.__file__), loader)
    stages_dir = folder / "stages"
    stages_dir.mkdir()
    index = []
    for i, (name, _, data) in enumerate(stages):
        file = f"{i:02d}.skops"
        (stages_dir / file).write_bytes(data)
        index.append({"name": name, "file": file})
    (stages_dir / _skops_model.STAGES_INDEX).write_text(json.dumps(index, indent=1))
    with _importable(code):
        yield str(loader), code_paths, {"stages": str(stages_dir)}


@contextmanager
def _importable(code: Path) -> Iterator[None]:
    """Put ``code`` first on ``sys.path`` inside the block, then put back what was there.

    On leaving, the entry inserted here goes, and of the entries added meanwhile only
    MLflow's copies of this model's ``code/`` folder: MLflow prepends one when it loads
    the model to check the input example, and never removes it (MLflow 3.17). Entries
    anyone else added stay. The modules imported from there (``_mlpipe_raw``,
    ``_mlpipe_trusted``) are put back as they were: absent, or another model's.
    """
    entry = str(code)
    names = (_skops_model.RAW_MODULE, _skops_model.TRUSTED_MODULE)
    modules = {name: sys.modules[name] for name in names if name in sys.modules}
    before = list(sys.path)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        added = list(sys.path)
        for path in before:
            if path in added:
                added.remove(path)
        for path in added:
            if path == entry or _copy_of_model_code(path):
                sys.path.remove(path)
        for name in names:
            if name in modules:
                sys.modules[name] = modules[name]
            else:
                sys.modules.pop(name, None)


def _copy_of_model_code(entry: str) -> bool:
    """Whether a ``sys.path`` entry is MLflow's copy of a code model's ``code/`` folder.

    MLflow deletes the temporary folder holding the copy once the model is logged.
    """
    path = Path(entry)
    raw = path / f"{_skops_model.RAW_MODULE}.py"
    return path.name == "code" and (not path.exists() or raw.is_file())
