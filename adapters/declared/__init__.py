"""Legacy systems declared by files: one system file and one mapping file per system.

``spec`` reads and checks the files (file:line for each problem), ``registry`` finds them in a
folder, ``soap`` and ``rest`` are the generic engines that speak to a system from its
declaration, ``system`` runs its operations through the hub's call policy, router and cache,
and ``linker`` links its records to hub customers. docs/systems.md describes the formats.
"""
