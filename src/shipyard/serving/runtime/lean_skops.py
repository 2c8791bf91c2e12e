"""Importing this module imports ``skops.io`` lean (see ``shipyard.models.flavors.skops_io``) and
makes every later scikit-learn load in this process use it: the fork server preloads it, and
the engine imports it, so a model server never builds skops' list of every estimator."""

from shipyard.models import flavors

flavors.LEAN_SKOPS = True
flavors.skops_io(lean=True)
