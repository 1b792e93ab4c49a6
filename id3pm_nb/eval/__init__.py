"""Judging an attack: LFW evaluation sets, identity metrics, the evaluation protocol, reports and the query-attack
benches."""
