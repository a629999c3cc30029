"""Waiting on a session: the waiter's work as steps, and the runners that drive them.

``step.py`` does one unit of work and says when the next is due (its docstring is the
contract for runners); ``context.py`` is what a run carries between steps; ``polls.py``
and ``settings.py`` are what every runner shares. The single-session runner of
`wait-and-deliver` is ``libtv_fsm.waiter.Waiter``; the home worker (`libtv-video worker`, one
process for every session of a home) is ``worker.py``, with ``homelock.py`` (its lock and log),
``listener.py`` (create-session handed to it over a socket; ``handoff.py`` is the stdlib-only
client side) and ``homefiles.py`` (its files under NEXU_HOME, stdlib only).
"""
