"""Real test targets on this machine: a cached Debian 12 root, fresh copies of it, a signed apt mirror.

The recipes are the test lab's (Debian chroots, SSH hosts in network namespaces, a qemu VM, a signed apt
mirror). Everything here needs root; tests that use it are marked ``lab``.
"""
