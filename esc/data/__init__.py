"""Datasets ESC adds to basicsr's DATASET_REGISTRY (basicsr's own paired/LMDB datasets serve the benchmarks)."""
from esc.data.sample_image_dataset import SampleImageDataset

__all__ = ['SampleImageDataset']
