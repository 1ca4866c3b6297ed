"""renderocc: 3D semantic occupancy from multi-camera images, trained with 2D labels by volume rendering."""

__version__ = "0.1.0"
