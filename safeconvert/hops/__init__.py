"""Each hop of a route in a child process: isolation, limits, other interpreters (docs/converter-protocol.md).

protocol: the request/response files; child: the in-package child; isolate: limits and process groups;
envs: which interpreter and command; settings: a run's limits and interpreters; run: one isolated converter
call; fallback: which routes to try after a failure, and the report's record of them; requantise: the int8
keep-float repair as a converter; standalone/: self-contained child scripts for other interpreters.
"""
