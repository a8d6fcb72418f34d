"""Monitoring: data drift (:mod:`.drift`); reports over the prediction log come next."""
