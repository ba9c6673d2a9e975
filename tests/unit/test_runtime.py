"""The long-running processes freeze their start-up heap once started (see nmc/runtime.py)."""

from __future__ import annotations

import gc

from nmc.runtime import freeze_startup_heap


def test_freezing_moves_the_heap_out_of_collections() -> None:
    gc.unfreeze()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 1000  # modules, classes, functions: out of every full collection
    finally:
        gc.unfreeze()


def test_the_served_app_freezes_after_start_up() -> None:
    from nmc.cli import served_app

    app = served_app()
    assert app.on_startup[-1] is freeze_startup_heap
