"""dlsetup: turn a bare Linux box, or a fleet, into a verified deep-learning workstation."""

__version__ = "0.1.0"
