"""Start-up hook installed with the package (``audio_lalm_autoregister.pth``).

lm-eval 0.4.13 has no plugin entry points, so this makes ``lm_eval --model audio_lalm --tasks
sakura_gender`` work right after ``pip install`` without ``--include_path``:

* when ``lm_eval.models`` is imported (lm-eval does that lazily, on the first model lookup), the
  ``audio_lalm`` model is registered *after* lm-eval's own models, as a lazy placeholder — so
  built-in models stay visible and torch is not imported at interpreter start;
* when ``lm_eval.tasks.manager`` is imported, ``TaskManager`` is wrapped so that every task
  manager also indexes this package's task folder;
* when ``lm_eval.loggers.evaluation_tracker`` is imported, an ``audio_lalm`` run without ``pretrained=`` (the
  embedded reference model) is named ``audio-lalm-reference`` (output folder and ``model_name`` in the results
  JSON) instead of lm-eval's random 8-character id.

Set ``AUDIO_LALM_NO_AUTOREGISTER=1`` to switch it off.  Importing this module is cheap: it only
installs an import hook (no torch, no lm-eval import).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

ENV_OFF = "AUDIO_LALM_NO_AUTOREGISTER"
_WATCHED = {"lm_eval.models", "lm_eval.tasks.manager", "lm_eval.loggers.evaluation_tracker"}


def tasks_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")


def register_model() -> None:
    from lm_eval.api.registry import model_registry

    if "audio_lalm" not in model_registry:
        model_registry.register("audio_lalm", target="audio_tasks.model:AudioLALM")


def patch_task_manager(module) -> None:
    TM = module.TaskManager
    if getattr(TM, "_audio_lalm_patched", False):
        return
    orig = TM.__init__

    def __init__(self, *args, include_path=None, **kwargs):
        paths = [] if include_path is None else (list(include_path) if isinstance(include_path, (list, tuple))
                                                 else [include_path])
        ours = tasks_dir()
        if ours not in [os.path.abspath(str(p)) for p in paths]:
            paths.insert(0, ours)
        orig(self, *args, include_path=paths, **kwargs)

    TM.__init__ = __init__
    TM._audio_lalm_patched = True


def patch_tracker(module) -> None:
    """Name the embedded reference model in lm-eval's results (folder + ``model_name``)."""
    GC = module.GeneralConfigTracker
    if getattr(GC, "_audio_lalm_patched", False):
        return
    orig = GC.log_experiment_args

    def log_experiment_args(self, model_source, model_args, *args, **kwargs):
        orig(self, model_source, model_args, *args, **kwargs)
        if model_source == "audio_lalm" and not GC._get_model_name(model_args):
            from audio_tasks.reference import REFERENCE_MODEL_NAME

            self.model_name = REFERENCE_MODEL_NAME
            self.model_name_sanitized = module.sanitize_model_name(REFERENCE_MODEL_NAME)

    GC.log_experiment_args = log_experiment_args
    GC._audio_lalm_patched = True


def _after_import(name: str, module) -> None:
    try:
        if name == "lm_eval.models":
            register_model()
        elif name == "lm_eval.tasks.manager":
            patch_task_manager(module)
        elif name == "lm_eval.loggers.evaluation_tracker":
            patch_tracker(module)
    except Exception as e:  # never break lm-eval because of us
        print(f"audio_lalm: auto-registration failed: {e}", file=sys.stderr)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner, name):
        self.inner, self.name = inner, name

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        _after_import(self.name, module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


class _OnceFilter:
    """lm-eval warns "Custom kwargs can be passed to `--metadata`" once per task with a custom dataset (all of
    ours: 32 times in the demo log); let it through once per process."""

    MARK = "Custom kwargs can be passed to `--metadata`"

    def __init__(self) -> None:
        self.seen = False

    def filter(self, record) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # pragma: no cover
            return True
        if self.MARK not in msg:
            return True
        if self.seen:
            return False
        self.seen = True
        return True


def quiet_repeated_warnings() -> None:
    import logging

    lg = logging.getLogger("lm_eval.api.task")
    if not any(isinstance(f, _OnceFilter) for f in lg.filters):
        lg.addFilter(_OnceFilter())


def install() -> None:
    if os.environ.get(ENV_OFF, "").strip().lower() in ("1", "true", "yes"):
        return
    quiet_repeated_warnings()
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    # Modules already imported (e.g. this is called late): act now.
    for name in _WATCHED:
        if name in sys.modules:
            _after_import(name, sys.modules[name])
    sys.meta_path.insert(0, _Finder())


install()
