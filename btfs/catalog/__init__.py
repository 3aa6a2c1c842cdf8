"""The catalog: the only package that speaks SQL. See schema.py for the data model and
catalog.py for how the parts fit together."""

from .catalog import Catalog
from .chunks import ChunkIndex
from .model import (
           DELETED,
           DIR,
           FILE,
           SYMLINK,
           ChildRow,
           ChunkRef,
           Content,
           Entry,
           LiveChild,
           Meta,
           NewChunk,
           Snapshot,
           Version,
)
from .reads import History
from .schema import ROOT
from .writer import BackupWriter

__all__ = ["Catalog", "History", "ChunkIndex", "BackupWriter", "ROOT", "Meta", "Version",
           "Entry", "ChildRow", "Snapshot", "ChunkRef", "Content", "LiveChild", "NewChunk",
           "FILE", "DIR", "SYMLINK", "DELETED"]
