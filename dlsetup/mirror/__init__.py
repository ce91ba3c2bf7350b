"""``dlsetup mirror``: every artifact the plans of a fleet install, fetched once into one signed folder.

:mod:`dlsetup.mirror.contents` (pure) says what a plan installs; :mod:`dlsetup.mirror.build` fetches it on the
controller and writes the signed apt repositories, the PEP 503 wheelhouse and the manifest;
:mod:`dlsetup.mirror.verify` checks a mirror before a run; :mod:`dlsetup.mirror.use` serves it to the hosts.
"""
