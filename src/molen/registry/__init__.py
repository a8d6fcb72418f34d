"""The model registry: versions and aliases (:mod:`.service`), lineage (:mod:`.lineage`), and
the quality gate (:mod:`.gate`)."""
