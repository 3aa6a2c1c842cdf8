"""The mount: the catalog's history as a read-only filesystem (by-time/, by-file/).

tree.py is the model (pure, no pyfuse3: what each directory holds, inode numbers, paging);
ops.py adapts it to pyfuse3 (attributes, errors, reads in worker threads); mount.py runs
it under trio until unmounted or signalled. Importing this package imports nothing else,
so commands that do not mount never load pyfuse3.
"""
