"""Option files: reading one (``reader``), validating it (``validation``) and deriving the training batch plan
(``batch``). Nothing here starts processes, seeds generators or touches a device."""
