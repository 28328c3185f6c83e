"""Serialize fitted stages so that they load in a fresh process, and know what they need."""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib.metadata
import io
import pickle
import sys
import threading
import types
from collections.abc import Iterable, Iterator
from typing import Any

import cloudpickle

from mlpipe.exceptions import SerializationError

__all__ = [
    "dumps",
    "installed_distribution",
    "installed_versions",
    "is_installed",
    "loads",
    "pickled_by_value",
    "referenced_modules",
    "requirements",
    "travelling_by_value",
]

# Top-level modules always pickled by value: mlpipe's own code must travel with
# the model, since the model has to load where mlpipe is not installed.
_ALWAYS_BY_VALUE = {"mlpipe"}
# cloudpickle's by-value registry is one per process: what mlpipe registered, and
# how many blocks of pickled_by_value (in any thread) still need each name.
_registry_lock = threading.Lock()
_registered: collections.Counter[str] = collections.Counter()


class _Recorder(cloudpickle.Pickler):
    """A cloudpickle pickler that notes the top-level module of everything it meets."""

    def __init__(self, file: io.BytesIO, modules: set[str]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._modules = modules

    def reducer_override(self, obj: Any) -> Any:
        owner = obj if isinstance(obj, type | types.FunctionType) else type(obj)
        module = getattr(owner, "__module__", None)
        if isinstance(module, str):
            self._modules.add(module.partition(".")[0])
        if isinstance(obj, types.ModuleType):
            self._modules.add(obj.__name__.partition(".")[0])
        return super().reducer_override(obj)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def installed_distribution(module: str) -> str | None:
    """The installed distribution that provides top-level ``module``, if any (never mlpipe)."""
    if module in _ALWAYS_BY_VALUE:
        return None
    names = _distributions().get(module)
    return names[0] if names else None


def is_installed(module: str) -> bool:
    """Whether top-level ``module`` comes with Python or an installed distribution.

    mlpipe counts as not installed: it travels by value with every model.
    """
    return (
        module in sys.stdlib_module_names
        or module in sys.builtin_module_names
        or (module in _distributions() and module not in _ALWAYS_BY_VALUE)
    )


@contextlib.contextmanager
def pickled_by_value(modules: Iterable[types.ModuleType]) -> Iterator[None]:
    """Inside the block, cloudpickle pickles ``modules`` by value; then its registry is as before.

    Registers only the modules that were not registered already and, on leaving (on
    an exception too), unregisters exactly those. Blocks may nest and run in several
    threads: a module stays registered until the last block that registered it ends,
    and one that something else registered is left alone.
    """
    mine: list[types.ModuleType] = []
    try:
        for module in modules:
            name = module.__name__
            with _registry_lock:
                if name in cloudpickle.list_registry_pickle_by_value() and not _registered[name]:
                    continue
                if not _registered[name]:
                    cloudpickle.register_pickle_by_value(module)
                _registered[name] += 1
                mine.append(module)
        yield
    finally:
        with _registry_lock:
            for module in mine:
                name = module.__name__
                _registered[name] -= 1
                if _registered[name]:
                    continue
                del _registered[name]
                if name in cloudpickle.list_registry_pickle_by_value():
                    cloudpickle.unregister_pickle_by_value(module)


def _register_needed(obj: Any, registered: contextlib.ExitStack) -> tuple[bytes, set[str]]:
    """Pickle ``obj``, registering (in ``registered``) every module it needs by value.

    Pickle by reference only what is installed; everything else (a local module,
    a notebook's classes, mlpipe itself) by value. By-value code may refer to more
    such modules, so repeat until no new one turns up. Returns the last pickle and
    the top-level modules it met.
    """
    done: set[str] = set()
    while True:
        modules: set[str] = set()
        buffer = io.BytesIO()
        _Recorder(buffer, modules).dump(obj)
        new = [
            sys.modules[m]
            for m in sorted(modules)
            if m != "__main__" and not is_installed(m) and m in sys.modules and m not in done
        ]
        if not new:
            return buffer.getvalue(), modules
        done.update(m.__name__ for m in new)
        registered.enter_context(pickled_by_value(new))


def _cloudpickle(obj: Any) -> tuple[bytes, set[str]]:
    # Each module stays registered until the last dump, whatever other threads
    # register and unregister meanwhile.
    with contextlib.ExitStack() as registered:
        return _register_needed(obj, registered)


@contextlib.contextmanager
def travelling_by_value(obj: Any) -> Iterator[None]:
    """Inside the block, cloudpickle pickles by value every module ``obj`` needs that
    is not installed.

    For what is sent to other processes (joblib's workers pickle their tasks with
    cloudpickle): a worker cannot import a module from a folder the user put on
    ``sys.path`` after the worker started.
    """
    with contextlib.ExitStack() as registered:
        _register_needed(obj, registered)
        yield


def dumps(obj: Any, serializer: str = "cloudpickle") -> tuple[bytes, str, set[str]]:
    """Serialize ``obj`` with cloudpickle, or dill when cloudpickle cannot; or with skops.

    Parameters
    ----------
    obj : object
    serializer : {"cloudpickle", "skops"}
        A pipeline's ``serializer``: ``"skops"`` saves with skops and refuses
        untrusted types (see :func:`mlpipe.model._skops.dumps`).

    Returns
    -------
    data : bytes
    serializer : {"cloudpickle", "dill", "skops"}
    modules : set of str
        Top-level modules the data refers to by reference.
    """
    if serializer == "skops":
        from mlpipe.model import _skops

        data, modules = _skops.dumps(obj)
        return data, "skops", modules
    try:
        data, modules = _cloudpickle(obj)
        return data, "cloudpickle", modules
    except Exception as cloudpickle_error:
        import dill

        try:
            data = dill.dumps(obj, recurse=True)
        except Exception as dill_error:
            raise SerializationError(
                f"Cannot serialize {type(obj).__name__}: cloudpickle failed with "
                f"{cloudpickle_error!r} and dill with {dill_error!r}. Keep open files, "
                "connections, locks and generators out of fitted attributes."
            ) from dill_error
        return data, "dill", referenced_modules(data)


def referenced_modules(data: bytes, serializer: str = "cloudpickle") -> set[str]:
    """Top-level modules existing data (a pickle, or what ``serializer`` wrote) refers to."""
    if serializer == "skops":
        from mlpipe.model import _trusted

        return {m for m in _trusted.modules_of(data) if is_installed(m)}
    import pickletools

    found: set[str] = set()
    strings: list[str] = []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("GLOBAL", "INST") and isinstance(arg, str):
            found.add(arg.split(" ")[0].partition(".")[0])
        elif isinstance(arg, str):
            strings.append(arg)
        if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add(strings[-2].partition(".")[0])
    return {m for m in found if is_installed(m)}


def loads(data: bytes, serializer: str) -> Any:
    """Load what :func:`dumps` wrote; skops data only after checking its types."""
    if serializer == "skops":
        from mlpipe.model import _skops

        return _skops.loads(data)
    if serializer == "dill":
        import dill

        return dill.loads(data)
    return cloudpickle.loads(data)


def requirements(modules: set[str], serializers: set[str]) -> list[str]:
    """Pinned pip requirements that make ``modules`` importable, plus what loading needs."""
    names = {"mlflow", "cloudpickle", "pandas", "numpy", "scikit-learn", *serializers}
    for module in modules:
        if is_installed(module) and module not in sys.stdlib_module_names:
            names.update(_distributions().get(module, []))
    return [f"{name}=={version}" for name, version in installed_versions(names).items()]


def installed_versions(names: Iterable[str]) -> dict[str, str]:
    """``{distribution: version}`` of those of ``names`` that are installed, by name."""
    versions = {name: _version(name) for name in sorted(names, key=str.lower)}
    return {name: version for name, version in versions.items() if version is not None}


@functools.cache
def _version(name: str) -> str | None:
    # Read once per process, as _distributions is: each lookup scans sys.path and
    # parses a METADATA file (about 5 ms), several times per logged fit. A package
    # upgraded on disk meanwhile is not what this process runs anyway.
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
