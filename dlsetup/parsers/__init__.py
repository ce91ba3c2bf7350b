"""Pure parsers: text in, data out. No I/O, standard library (+ defusedxml), Python 3.9+."""
