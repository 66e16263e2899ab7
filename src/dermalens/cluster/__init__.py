"""Batch prediction on a Dask cluster: `dermalens predict ... --cluster ADDRESS|local:N --out FOLDER`.

The inputs are cut into partitions; each worker keeps one Predictor per bundle and writes each
partition as one Parquet file, atomically, named by a hash of its images, so a rerun into the same
folder skips what is done and a killed client or worker costs at most the partitions in flight.
docs/distributed.md says how to run it on a laptop, SLURM and Kubernetes.
"""
from .run import run_cluster_predict

__all__ = ["run_cluster_predict"]
