"""SmallCovid: COVID-19 lung lesion segmentation on chest CT slices (research use only)."""

__version__ = "0.1.0"
