"""btfs: personal backups you can browse as a filesystem of history."""

__version__ = "0.1.0"
