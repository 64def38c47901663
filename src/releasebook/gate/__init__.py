"""The readiness gate: named checks (``registry``), the script run on each host
(``gate``), the controller's view of its output (``report``) and how it is shipped and
invoked (``command``)."""
