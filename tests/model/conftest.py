"""Fixtures shared by the model tests."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.model._helpers import venv_with_requirements

WHEELHOUSE_ENV = "MLPIPE_TEST_WHEELHOUSE"


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of wheels the venvs install from (see ``venv_with_requirements``);
    tests using it share the xdist group ``wheelhouse``.

    It outlives the session (``$MLPIPE_TEST_WHEELHOUSE``, else
    ``~/.cache/mlpipe-tests/wheelhouse``): resolving a model's pins against the package
    index and downloading their wheels takes half a minute, and the pins change only
    with the environment's versions. A venv still installs exactly the logged pins,
    with ``--no-index`` from these wheels; pins without their wheels here are
    downloaded first. Without a writable cache folder, the session's own is used.
    """
    configured = os.environ.get(WHEELHOUSE_ENV)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = Path(configured) if configured else cache / "mlpipe-tests" / "wheelhouse"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    return tmp_path_factory.mktemp("wheelhouse")


class RequirementVenvs:
    """Venvs holding exactly a model's logged requirements, built once per set of pins.

    A model whose pins equal those of a venv built before gets that venv (the tests
    only read it). A model whose pins include all of an earlier venv's gets a new venv
    that reaches the earlier one's packages through a ``.pth`` file and installs the
    rest itself: what it can import is then exactly what its own pins need, as in a
    venv built from nothing, without installing the shared packages twice.
    """

    def __init__(self, root: Path, wheelhouse: Path):
        self.root = root
        self.wheelhouse = wheelhouse
        self.built: list[tuple[frozenset[str], Path]] = []

    @staticmethod
    def pins(requirements: Path) -> frozenset[str]:
        return frozenset(line.strip() for line in requirements.read_text().splitlines() if line)

    def get(self, requirements: Path, log: Path) -> Path:
        """The venv directory for ``requirements`` (a pip requirements file)."""
        pins = self.pins(requirements)
        for built, venv in self.built:
            if built == pins:
                log.write_text(f"The venv of these pins, built before: {venv}\n")
                return venv
        venv = self.root / f"venv{len(self.built)}"
        base = [venv for built, venv in self.built if built < pins]
        if base:
            subprocess.run(
                [sys.executable, "-m", "venv", "--without-pip", str(venv)],
                check=True,
                capture_output=True,
                timeout=120,
            )
            (_site_packages(venv) / "_earlier_venv.pth").write_text(f"{_site_packages(base[0])}\n")
        venv_with_requirements(venv, requirements, self.wheelhouse, log, exists=bool(base))
        self.built.append((pins, venv))
        return venv


def _site_packages(venv: Path) -> Path:
    relative = Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
    return venv / relative


@pytest.fixture(scope="session")
def requirement_venvs(
    tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path
) -> RequirementVenvs:
    """Venvs of logged requirements shared by one worker's tests (xdist group ``wheelhouse``)."""
    return RequirementVenvs(tmp_path_factory.mktemp("venvs"), wheelhouse)
