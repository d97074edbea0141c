"""Loop closing: place descriptors (``place``), keyframe database (``keyframe_database``), loop verification
(``sim3_solver``, ``verification``), essential-graph optimisation and map-point correction (``pose_graph``,
``correction``), global bundle adjustment (``global_ba``) and the thread that runs them (``loop_closing``).

The pieces are pure functions and small classes over arrays or the map; the loop-closing thread owns
the order of map access and calls them.
"""
