"""Documents rendered from the definitions: the runbooks (``runbook``), the readiness
document (``readiness``), through one Jinja2 setup (``templating``)."""
