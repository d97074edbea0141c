"""How the SLAM process reaches learned models: one client, the model in-process or in ``slam-infer``.

* :mod:`slam.inference.client`: :class:`~slam.inference.client.InferenceClient`,
  requests by task (``descriptor``, ``depth``, ``pose``, ...) that never block
  the caller; answers, errors, timeouts and late answers come back from
  ``poll``; whether the models can be reached now (``available``).
* :mod:`slam.inference.local`: the same ``nets.server`` service behind an
  ``RpcServer`` on an ``inproc://`` endpoint in a thread of this process, so
  in-process inference takes the very code path ``slam-infer`` does. The one
  place the SLAM process imports ``nets`` (and torch), lazily.
* :mod:`slam.inference.place`: NetVLAD as a
  :class:`~slam.backbone.loop.place.PlaceDescriber` over that client, and
  :func:`~slam.inference.place.make_place_describer`, which picks NetVLAD or
  ORB-VLAD from the run's settings and says which and why.

It lives outside ``slam.backbone`` (which never imports the bus or ``nets``)
and outside ``slam.nodes`` (the processes of a launch file): both the
in-process ``slam-run`` and the graph's SLAM process (``slam.nodes.tracker``)
build their place describer here.
"""
