"""Loop closing core: keyframe database (``keyframe_database``), loop verification (``sim3_solver``),
essential-graph optimisation and map-point correction (``pose_graph``).

Pure functions and small classes over arrays; the loop-closing thread owns the
map access and calls these.
"""
