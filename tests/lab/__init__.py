"""Real test targets on this machine: a cached Debian 12 root, fresh copies of it, a signed apt mirror.

See ../shared/TESTLAB.md. Everything here needs root; tests that use it are marked ``lab``.
"""
