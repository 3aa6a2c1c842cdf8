"""The catalog's copies in the vault: each host publishes its catalog after every backup,
and `btfs recover` rebuilds it on a machine that has nothing else.

- objects.py: what one generation object holds and how it is named;
- publish.py: write the next generation (only the pages that changed), keep a few;
- fetch.py: list the hosts in a vault, rebuild a catalog from the newest sound generation;
- recover.py: `btfs recover`, the catalog and config of a host written to a new machine.

It depends on the vault interface and on the catalog's database file only, never on the
catalog's tables: a copy is the file's pages, whatever the schema.
"""

