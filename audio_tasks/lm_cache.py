"""lm-eval's ``--use_cache`` for ``audio_lalm``: the guard against reusing another configuration's scores, and
the keys results are stored under."""

from __future__ import annotations

import copy
import json
from typing import Any, Sequence

__all__ = ["FINGERPRINT_KEY", "guard_cache_db", "cache_args"]

FINGERPRINT_KEY = "__audio_lalm_model_fingerprint__"


def guard_cache_db(cache_hook: Any, fingerprint: dict[str, Any]) -> None:
    """lm-eval's cache key ignores ``model_args``, so runs with other model or intervention arguments would
    silently reuse each other's scores: the database remembers the first run's ``fingerprint`` and any
    other is refused."""
    db = getattr(cache_hook, "dbdict", None)
    if db is None:
        return
    mine = json.dumps(fingerprint, sort_keys=True, default=str)
    theirs = db.get(FINGERPRINT_KEY)
    if theirs is None:
        db[FINGERPRINT_KEY] = mine
    elif theirs != mine:
        raise ValueError(
            "audio_lalm: the --use_cache database was written by a run with different model arguments "
            f"({theirs}) than this one ({mine}); lm-eval's cache key ignores model_args, so reusing it "
            "would mix up scores. Use a separate --use_cache path per model/intervention configuration.")


def cache_args(cache_hook: Any, requests: Sequence[Any]) -> list[tuple] | None:
    """Each request's args as lm-eval's --use_cache looked them up (before ``rendered_prompt`` is added to
    the aux dict), with the audio: results are stored under exactly that key, so an identical rerun is
    served from the cache and requests with other clips never share an entry.  None without a cache."""
    if getattr(cache_hook, "dbdict", None) is None:
        return None
    return [tuple(copy.deepcopy(a) if isinstance(a, dict) else a for a in r.args) for r in requests]
