"""The keyframe SLAM backbone: front end (features, matching, tracking), map, optimisation, local mapping, system."""
