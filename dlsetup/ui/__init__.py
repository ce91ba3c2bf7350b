"""Human output (rich). Imported only on the human path: ``--json`` never loads rich."""
