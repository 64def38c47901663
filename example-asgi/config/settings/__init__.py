"""Settings split: ``base`` (shared), ``dev`` (local work) and ``prod`` (deployed hosts)."""
