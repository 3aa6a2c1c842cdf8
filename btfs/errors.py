"""Domain errors and the exit codes they map to.

A `BtfsError` is something a user can act on: the CLI prints its message as one line on
stderr and exits with its code. Anything else is a bug and keeps its traceback. Errors are
translated to exit codes once, in `btfs.cli.main`, never in the service layer.
"""

# Exit codes, documented in the README. 2 is click's own for usage errors.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3  # a backup skipped unreadable files; a restore could not restore some
EXIT_LOCKED = 4
EXIT_CHECK_FAILED = 5  # check found problems; repair left damaged files


class BtfsError(Exception):
    """A problem the user can fix; its message is one line naming it."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(BtfsError):
    """Bad arguments that click could not see (a path that is not tracked, a bad time)."""

    exit_code = EXIT_USAGE


class ChooseHost(UsageError):
    """`btfs recover` without --host, and the vault holds several hosts: `hosts` lists
    them (btfs.replica.fetch.HostCopy) for the CLI to print."""

    def __init__(self, message: str, hosts: list):
        super().__init__(message)
        self.hosts = hosts


class ConfigError(BtfsError):
    """Missing or invalid configuration."""


class NotInitialized(ConfigError):
    def __init__(self, config_path):
        super().__init__(f"no btfs configuration at {config_path}: run 'btfs init' first")


class LockedError(BtfsError):
    """Another writer (backup, prune) holds the catalog."""

    exit_code = EXIT_LOCKED


class VaultError(BtfsError):
    """The vault is unreachable, or an object in it is missing."""


class IntegrityError(VaultError):
    """Stored data does not match its hash: never return these bytes."""


class CheckFailed(BtfsError):
    exit_code = EXIT_CHECK_FAILED
