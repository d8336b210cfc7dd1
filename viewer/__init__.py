"""The OHIF viewer for dicomflow: the prebuilt ``@ohif/app`` from npm plus an ``app-config.js`` for our API.

* :mod:`viewer.ohif`: fetch the pinned package with ``npm pack`` (the tarball only: its dependency
  tree cannot be installed from npm, and the prebuilt ``dist/`` needs none of it), check its integrity
  and unpack ``dist/``.
* :mod:`viewer.config`: the ``app-config.js`` text: one DICOMweb data source (our root), OpenID Connect
  sign-in (Entra ID in Azure, the devhost's development issuer locally).
* :mod:`viewer.build`: assemble a servable site (symbolic links to ``dist/`` + the config; ``--copy``
  for a deployable folder).

``python -m viewer build --dicomweb URL --out DIR [--authority URL --client-id ID --scope S]``.
"""
