"""Self-contained child scripts, one per converter that can run in another interpreter.

Each file here is run as `OTHER_PYTHON SCRIPT request.json response.json` (docs/converter-protocol.md) and
imports nothing from safeconvert: the other interpreter usually does not have it.
"""
