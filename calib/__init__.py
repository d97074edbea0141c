"""Camera calibration: tools and the camera files of the public datasets (``calib/cameras/*.yaml``)."""
