"""Experiments: every command that writes a run folder, each as config -> run -> results -> report.

Only this layer (and the CLI that calls it) writes reports, plots and tables; :mod:`stelab.theory` stays math.
"""
