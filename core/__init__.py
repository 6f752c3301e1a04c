"""Atelier's engine: the run ledger, scheduler, backends and artifact storage. No front-door code."""
