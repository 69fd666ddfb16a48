"""Installs the start-up hook ``audio_lalm_autoregister.pth`` next to the packages, for regular
and editable installs (see audio_tasks/_startup.py); everything else is in pyproject.toml."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "audio_lalm_autoregister.pth"
HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            self.copy_file(os.path.join(HERE, PTH), os.path.join(self.build_lib, PTH), preserve_mode=0)


cmdclass = {"build_py": BuildPyWithPth}

try:
    from setuptools.command.editable_wheel import editable_wheel

    class EditableWheelWithPth(editable_wheel):
        def _select_strategy(self, *args, **kwargs):
            strategy = super()._select_strategy(*args, **kwargs)
            outer_call = strategy.__call__

            class _Wrapped:
                def __enter__(self_inner):
                    strategy.__enter__()
                    return self_inner

                def __exit__(self_inner, *exc):
                    return strategy.__exit__(*exc)

                def __call__(self_inner, wheel, files, mapping):
                    outer_call(wheel, files, mapping)
                    with open(os.path.join(HERE, PTH), "rb") as f:
                        wheel.writestr(PTH, f.read())

            return _Wrapped()

    cmdclass["editable_wheel"] = EditableWheelWithPth
except ImportError:  # very old setuptools: regular installs still get the hook
    pass

setup(cmdclass=cmdclass)
