"""Retention campaigns: who gets an offer, who is held back to measure it, and what it did."""
