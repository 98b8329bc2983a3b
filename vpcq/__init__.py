"""vpcq: AWS-style Virtual Private Clouds on a Linux host, driven by an event log."""

__version__ = "0.1.0"
