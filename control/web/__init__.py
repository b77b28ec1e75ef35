"""The HTML side of the control process: public status pages (``status``) and the admin
dashboard (``dashboard``), server-rendered from ``templates``. The dashboard acts only
through in-process /api/v1 requests, with the signed-in caller's token."""
