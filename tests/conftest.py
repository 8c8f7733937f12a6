"""Shared test set-up: real data from ``../shared/data`` (or ``$ZOO_SHARED_DATA``), offline W&B,
a per-session cache dir, and an in-process CLI runner.

``ZOO_TEST_NO_SHARED=1`` runs the suite as on a fresh clone without ``../shared``: the real data is
ignored even where it exists, so every data test must pass on the fixtures of ``tests/data_fixtures.py``
(``ZOO_TEST_NO_SHARED=1 make test`` checks that nothing silently needs the real data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ZOO_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
#: whether the real data is used: present, and not switched off by ZOO_TEST_NO_SHARED (see the module docstring)
HAVE_SHARED = SHARED_DATA.is_dir() and os.environ.get("ZOO_TEST_NO_SHARED", "") in ("", "0")
CONFIGS = REPO / "configs"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session", autouse=True)
def zoo_env(tmp_path_factory):
    """Point every DataModule at the shared real data (a missing folder without it) and a throw-away cache."""
    cache = tmp_path_factory.mktemp("zoo_cache")
    old = {k: os.environ.get(k) for k in ("ZOO_DATA_DIR", "ZOO_CACHE_DIR", "WANDB_DIR")}
    os.environ["ZOO_DATA_DIR"] = str(SHARED_DATA if HAVE_SHARED else cache / "no-shared-data")
    os.environ["ZOO_CACHE_DIR"] = str(cache)
    os.environ["WANDB_DIR"] = str(tmp_path_factory.mktemp("wandb"))
    yield {"data": SHARED_DATA if HAVE_SHARED else None, "cache": cache}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def pytest_collection_modifyitems(config, items):
    """The real-data layer (tests that take ``shared_data``) exists only where ``../shared/data`` does: on a
    clone without it those tests are deselected, not skipped, and the summary says how many and why. Every
    behaviour they check is also tested on fixtures (``config_data`` and the format writers)."""
    if HAVE_SHARED:
        return
    layer = [item for item in items if "shared_data" in getattr(item, "fixturenames", ())]
    if layer:
        config.hook.pytest_deselected(items=layer)
        items[:] = [item for item in items if item not in layer]
        config._zoo_real_data_layer = len(layer)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = getattr(config, "_zoo_real_data_layer", 0)
    if n:
        terminalreporter.write_line(f"{n} test(s) of the real-data layer deselected: no shared data at {SHARED_DATA} "
                                    "(their behaviour is covered on fixtures; set ZOO_SHARED_DATA to run them)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not HAVE_SHARED:
        pytest.skip(f"shared real data not found at {SHARED_DATA} (set ZOO_SHARED_DATA)" if not SHARED_DATA.is_dir()
                    else "shared real data switched off by ZOO_TEST_NO_SHARED")
    return SHARED_DATA


def run_cli(args: list[str]):
    """Run ``python -m zoo <args>`` in-process and return the LightningCLI object."""
    from unittest import mock

    from zoo.cli import main

    with mock.patch("sys.argv", ["zoo"]):  # pytest's own argv must not leak into the CLI
        return main([str(a) for a in args])


@pytest.fixture(scope="session")
def _fixture_data_root(tmp_path_factory) -> Path:
    from data_fixtures import write_all

    return write_all(tmp_path_factory.mktemp("fixture_data"))


@pytest.fixture
def config_data(request, monkeypatch) -> Path:
    """The real shared data when present; otherwise tiny fixtures of every dataset in its real format
    (so a clone without ``../shared`` still runs every config), with ``ZOO_DATA_DIR`` pointing at them."""
    if HAVE_SHARED:
        return SHARED_DATA
    root = request.getfixturevalue("_fixture_data_root")
    monkeypatch.setenv("ZOO_DATA_DIR", str(root))
    return root
