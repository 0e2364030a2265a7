"""Fleet-scale offline jobs: many bags decoded, evaluated, replayed and trained on Dask.

The modules: :mod:`.sources` (bags, directories, globs and dataset directories into a
list of partitions), :mod:`.decode` (one partition into arrays: a bag, or a dataset's
labels file), :mod:`.manifest` (a dataset's format and where its files are),
:mod:`.dataset` (bags into a Parquet dataset), :mod:`.cluster` (where the
partitions run: in this process, on a ``LocalCluster`` or on a running Dask scheduler,
with a progress line), and one module per job: :mod:`.evaluate`, :mod:`.replay`,
:mod:`.train`.

A partition is one bag or one Parquet file of a dataset; every job holds at most a few
partitions in memory at once, wherever it runs. Dask (``distributed``) and pyarrow come
with the optional extra ``fleet``; the robot's runtime never imports this package.
"""

INSTALL_HINT = "fleet jobs need dask and pyarrow: pip install 'robot-daemon[fleet]'"
