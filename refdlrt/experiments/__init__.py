"""Layer 6, experiments: ``refdlrt sweep``, grids of training runs (one run folder per cell)
on Dask, resumable, with validation-based learning-rate selection, tables and figures.

``grid`` turns the command line or a TOML/JSON file into a plan and its cells, ``cell`` runs one
cell (on a Dask worker or in this process), ``schedule`` drives a sweep, ``aggregate`` and
``plots`` rebuild the tables and figures from the cell folders, ``command`` is the subcommand.
"""
