"""``robot-daemon demo``: a simulated bag through the real daemon, watched live."""
