"""Self-checks for the exercises: a student's function is run against an independent reference."""

from __future__ import annotations

from collections.abc import Callable


def check_exercise(name: str, test: Callable[[], object]) -> None:
    """Run ``test`` (which calls the student's code and asserts); print one line saying how it went."""
    try:
        test()
    except NotImplementedError:
        print(f"[todo] {name}: not implemented yet; fill in the TODO above and run this cell again.")
        return
    except AssertionError as err:
        print(f"[fail] {name}: {err or 'the check did not hold'}")
        return
    print(f"[pass] {name}")
