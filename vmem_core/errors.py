"""Named errors. Every message names the bad value and what is accepted, so the CLI can print it as one line."""


class VmemError(Exception):
    """Base class of every error vmem raises on purpose."""


class BadImageError(VmemError):
    """An input is not a decodable image within the size limits."""


class BadVectorError(VmemError):
    """An embedding has the wrong shape, is not finite, or is zero."""


class UnknownIdError(VmemError, KeyError):
    """An exemplar id is not in the memory (or not in the state the operation needs)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownLabelError(VmemError, KeyError):
    """A label is not in the memory."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class EncoderError(VmemError):
    """An encoder name cannot be resolved or its weights cannot be loaded."""


class EncoderMismatchError(VmemError):
    """A memory was opened with an encoder other than the one that built it."""


class MemoryFormatError(VmemError):
    """A path is not a vmem memory, or one of a format this version cannot read."""


class MemoryLockedError(VmemError):
    """Another process holds the memory's database open."""


class DatasetError(VmemError):
    """A dataset directory or CSV file cannot be read."""


class BadSettingError(VmemError, ValueError):
    """A voting setting (k, rule, pruning, threshold, top-N, a rule parameter) is not one vmem accepts."""


class AccessDeniedError(VmemError):
    """The session's role does not allow the change it asked for (a viewer editing the memory)."""


class ReadOnlyError(VmemError):
    """A change was asked of a memory opened for reading alone."""


class StorageError(VmemError, OSError):
    """A file of the memory could not be written (a full disk, a read-only filesystem): the change did not happen.
    An OSError too, so that code which tolerates a failed write (an index snapshot) tolerates this one."""

    def __str__(self) -> str:  # OSError would format (errno, strerror); the message is one line already
        return str(self.args[0]) if self.args else ""
