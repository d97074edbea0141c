"""Per-frame work: ORB features, matching, monocular initialisation, tracking against the local map."""
