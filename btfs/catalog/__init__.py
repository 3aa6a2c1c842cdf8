"""The catalog: the only package that speaks SQL. See schema.py for the data model."""

from .catalog import ROOT, Catalog
from .model import (
           DELETED,
           DIR,
           FILE,
           SYMLINK,
           ChunkRef,
           Content,
           Entry,
           LiveChild,
           Meta,
           NewChunk,
           Snapshot,
           Version,
)

__all__ = ["Catalog", "ROOT", "Meta", "Version", "Entry", "Snapshot", "ChunkRef", "Content",
           "LiveChild", "NewChunk", "FILE", "DIR", "SYMLINK", "DELETED"]
