"""Who may call the HTTP API: bearer tokens (Entra ID in Azure, the devhost's issuer locally), roles,
CORS for browser viewers, and one audit line per request.

* :mod:`roles`: the app roles (``reader``, ``writer``, ``admin``), what each grants, and which role a
  DICOMweb method needs.
* :mod:`tokens`: RS256 validation of issuer, audience, expiry and not-before against the issuer's
  JWKS (cached, refetched when a token names a new key).
* :mod:`cors`: the allowed origins and the preflight answer.
* :mod:`service`: :func:`~shared.auth.service.authorize`, the one entry point the HTTP adapters call,
  and :func:`~shared.auth.service.audit`.
"""
