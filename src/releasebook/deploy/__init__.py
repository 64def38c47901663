"""Decisions: releases, rollbacks and status run against hosts (``release``,
``rollback``, ``status``), the failure policy as a pure function (``policy``), connecting
and the history records (``connection``, ``history``)."""
