"""Files: lazy movie reading and ROI files (numpy, tifffile, roifile only)."""

from cainfer.io.movie import Movie, MovieError, load_movie, movie_files, natural_key
from cainfer.io.rois import check_masks, masks_from_labels, read_rois, write_rois

__all__ = [
    "Movie",
    "MovieError",
    "check_masks",
    "load_movie",
    "masks_from_labels",
    "movie_files",
    "natural_key",
    "read_rois",
    "write_rois",
]
