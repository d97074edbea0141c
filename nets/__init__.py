"""nets: the learned models (torch) and the inference server. Imports ``slam`` only for geometry and readers."""
