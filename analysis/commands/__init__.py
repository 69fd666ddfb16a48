"""The commands of ``python -m analysis``, one module each (see :mod:`analysis.runner` for the tree).

Every command module has ``register(subparsers)``: it adds the command's parser and sets its entry point
(``set_defaults(func=...)``, a function of the parsed arguments returning the exit code). The shared preamble of
the model commands (load the model and the items, pin the settings, open the record store) is
:func:`analysis.commands.common.start_run`.
"""
