"""The production ASGI entry point tunes the cyclic GC for a long-lived server process."""

import gc


def test_the_server_process_freezes_its_startup_objects_and_collects_young_ones_rarely():
    from gatewaysite import asgi  # noqa: F401  (imported by uvicorn in production)

    assert gc.get_freeze_count() > 10_000  # Django and the apps, out of every full pass
    assert gc.get_threshold() == (10_000, 20, 20)
