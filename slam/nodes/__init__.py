"""The processes of a launch file: the source (sensors or replay) and the SLAM process; ``nets.server`` serves models."""
