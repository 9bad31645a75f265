"""Datasets ESC adds to basicsr's DATASET_REGISTRY (basicsr's own paired/LMDB datasets serve the benchmarks)."""
from esc.data.arbitrary_scale_dataset import ArbitraryScaleTestDataset, ArbitraryScaleTrainDataset
from esc.data.realesrgan_dataset import ESCRealESRGANDataset
from esc.data.sample_image_dataset import SampleImageDataset

__all__ = ['ArbitraryScaleTestDataset', 'ArbitraryScaleTrainDataset', 'ESCRealESRGANDataset', 'SampleImageDataset']
