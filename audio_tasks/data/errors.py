"""Errors of the data loaders that a user fixes by pointing at data, not by reading a traceback."""

from __future__ import annotations

__all__ = ["DataUnavailable", "hub_unavailable"]


class DataUnavailable(SystemExit):
    """A dataset is neither local nor reachable.  A ``SystemExit`` so that the command line prints the one
    message (which names the dataset and every way to provide it) instead of lm-eval's long traceback."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def hub_unavailable(name: str, ways: list[str], err: BaseException) -> DataUnavailable:
    """Build the error for a dataset that is neither local nor on the hub, listing ways to provide it."""
    listed = "\n".join(f"  {i}. {w}" for i, w in enumerate(ways, 1))
    return DataUnavailable(f"dataset {name!r} is not available here: no local copy was given and the Hugging Face "
                           f"hub could not provide it ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200] if str(err) else ''}).\n"
                           f"Provide it in one of these ways:\n{listed}")
