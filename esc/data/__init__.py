"""Datasets ESC adds to basicsr's DATASET_REGISTRY (basicsr's own paired/LMDB datasets serve the benchmarks), and the
official repository's dataset names its option files use (``DownsampleImageDataset``, ``RealESRGANDataset``)."""
from esc.data.arbitrary_scale_dataset import ArbitraryScaleTestDataset, ArbitraryScaleTrainDataset
from esc.data.downsample_dataset import DownsampleImageDataset
from esc.data.realesrgan_dataset import ESCRealESRGANDataset, RealESRGANDataset
from esc.data.sample_image_dataset import SampleImageDataset

__all__ = ['ArbitraryScaleTestDataset', 'ArbitraryScaleTrainDataset', 'DownsampleImageDataset', 'ESCRealESRGANDataset',
           'RealESRGANDataset', 'SampleImageDataset']
