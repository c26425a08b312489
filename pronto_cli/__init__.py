"""The ``pronto`` command line: one entry point, one subcommand per component.

Thin on purpose: ``pronto --help`` imports no component, and ``pronto serve`` imports the
server only, so a serving image without the training or load-test libraries runs it.
"""
