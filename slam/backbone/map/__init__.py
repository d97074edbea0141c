"""The map: keyframes, map points, covisibility and the map save file."""
