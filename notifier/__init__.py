"""Alert channels: one module per channel on one HTTP transport with an SSRF guard
(``base``, ``guard``), and the checks of their configuration (``schema``). It imports no
other package of lastseen, so any process can send through it."""
