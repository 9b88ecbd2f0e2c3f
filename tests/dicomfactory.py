"""Small synthetic DICOM images built with pydicom, for converter tests (geometry chosen by hand)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_dicom(path: Path, pixels: np.ndarray, *, ipp, iop, spacing, instance: int = 1, trigger: float | None = 0.0,
                series_number: int = 1, series_uid: str = "1.2.3.4", slice_location: float | None = None,
                cardiac_images: int | None = None, patient_id: str = "P1", slope: float | None = None,
                intercept: float | None = None) -> Path:
    """Write one MR image. ``pixels`` is (rows, columns) int16; ``spacing`` is (row, column) mm."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels, dtype=np.int16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientID = patient_id
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance
    if trigger is not None:
        ds.TriggerTime = trigger
    if cardiac_images is not None:
        ds.CardiacNumberOfImages = cardiac_images
    ds.ImagePositionPatient = [float(x) for x in ipp]
    ds.ImageOrientationPatient = [float(x) for x in iop]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    if slice_location is not None:
        ds.SliceLocation = slice_location
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = pixels.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def coded_image(rows: int, cols: int, code: int) -> np.ndarray:
    """An image whose pixel (r, c) holds ``code * 10000 + r * 100 + c`` (wrapped to int16 range):
    lets a test check which pixel went where."""
    r, c = np.mgrid[0:rows, 0:cols]
    return ((code * 10000 + r * 100 + c) % 32000).astype(np.int16)
